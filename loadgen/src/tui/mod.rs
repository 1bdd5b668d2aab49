//! `loadgen tui`: the interactive console. A form for the parameters, then a live screen
//! redrawn about ten times a second while the engine runs on the async runtime's threads; the
//! screen only reads what workers publish (timeline intervals, ledger atomics), so drawing
//! never holds up a request. Keys steer the run; every run ends with the same report files as
//! `loadgen run`.

pub mod form;
pub mod live;
pub mod view;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
};
use tokio::runtime::Handle;

use crate::{
    engine::{self, Run, RunResult},
    session::{SessionOptions, write_report},
};
use form::Form;
use live::{LiveView, ServiceWatch, Tracker};

/// About ten frames a second.
const FRAME: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct TuiOptions {
    pub form: Form,
    /// Reports go into folders under here.
    pub results: PathBuf,
    /// The first run's folder name (later runs add -2, -3, ...); default tui-<unix time>.
    pub name: Option<String>,
    /// The command line recorded in each summary.json.
    pub command: String,
    /// Start the run at once instead of waiting on the form.
    pub start: bool,
    /// Quit once the run has ended by itself and its report is written.
    pub exit_when_done: bool,
}

/// Runs the console until the user quits; returns the report folders it wrote.
/// Runs the console on a thread of its own (it blocks on the terminal) and returns the
/// folders of the reports it wrote.
pub async fn run_console(options: TuiOptions) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        "the console needs a terminal; use `loadgen run` in scripts and pipes"
    );
    let runtime = Handle::current();
    tokio::task::spawn_blocking(move || run(options, runtime)).await?
}

pub fn run(options: TuiOptions, runtime: Handle) -> anyhow::Result<Vec<PathBuf>> {
    let mut terminal = ratatui::try_init()?;
    let mut app = App::new(options, runtime);
    let outcome = app.event_loop(&mut terminal);
    ratatui::restore();
    outcome?;
    Ok(app.reports)
}

enum Screen {
    Form,
    Live(Box<LiveRun>),
}

/// A run on the live screen. `run` is `None` once it has ended and the report is written; the
/// screen then keeps its last view.
struct LiveRun {
    run: Option<Run>,
    tracker: Tracker,
    service: ServiceWatch,
    dir: PathBuf,
    last: Option<LiveView>,
}

pub struct App {
    options: TuiOptions,
    runtime: Handle,
    form: Form,
    screen: Screen,
    help: bool,
    quit: bool,
    /// Shown in the footer; background tasks (a reset) write here too.
    message: Arc<Mutex<String>>,
    reports: Vec<PathBuf>,
    runs_started: usize,
}

impl App {
    fn new(options: TuiOptions, runtime: Handle) -> Self {
        let form = options.form.clone();
        Self {
            options,
            runtime,
            form,
            screen: Screen::Form,
            help: false,
            quit: false,
            message: Arc::new(Mutex::new(String::new())),
            reports: Vec::new(),
            runs_started: 0,
        }
    }

    fn say(&self, message: impl Into<String>) {
        *self.message.lock() = message.into();
    }

    fn event_loop(&mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
        if self.options.start {
            self.start_run();
        }
        while !self.quit {
            let frame_started = Instant::now();
            self.tick()?;
            terminal.draw(|frame| self.draw(frame))?;
            let wait = FRAME.saturating_sub(frame_started.elapsed());
            if event::poll(wait)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                self.on_key(key)?;
            }
        }
        Ok(())
    }

    /// Follows the running load; saves the report when the run ends by itself.
    fn tick(&mut self) -> anyhow::Result<()> {
        let Screen::Live(live) = &mut self.screen else {
            return Ok(());
        };
        let Some(run) = &live.run else {
            return Ok(());
        };
        live.tracker.update(run);
        live.last = Some(
            live.tracker
                .view(run, live.service.rows(), self.message.lock().clone()),
        );
        let done = run.is_done();
        if done {
            self.end_run()?;
            if self.options.exit_when_done {
                self.quit = true;
            }
        }
        Ok(())
    }

    fn draw(&self, frame: &mut Frame) {
        match &self.screen {
            Screen::Form => view::draw_form(frame, &self.form, &self.message.lock()),
            Screen::Live(live) => {
                if let Some(last) = &live.last {
                    let mut shown = last.clone();
                    shown.message = self.message.lock().clone();
                    view::draw_live(frame, &shown, self.help);
                }
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> anyhow::Result<()> {
        let interrupt =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if matches!(self.screen, Screen::Form) {
            match key.code {
                _ if interrupt => self.quit = true,
                KeyCode::Esc => self.quit = true,
                KeyCode::Up | KeyCode::BackTab => self.form.previous(),
                KeyCode::Down | KeyCode::Tab => self.form.next(),
                KeyCode::Left | KeyCode::Right => self.form.toggle(),
                KeyCode::Char(' ') if self.form.field().is_choice() => self.form.toggle(),
                KeyCode::Char(c) => self.form.type_char(c),
                KeyCode::Backspace => self.form.backspace(),
                KeyCode::Enter => self.start_run(),
                _ => {}
            }
            return Ok(());
        }
        if interrupt || key.code == KeyCode::Char('q') {
            self.end_run()?;
            self.quit = true;
            return Ok(());
        }
        if key.code == KeyCode::Char('?') {
            self.help = !self.help;
            return Ok(());
        }
        if key.code == KeyCode::Char('e') {
            self.end_run()?;
            self.screen = Screen::Form;
            return Ok(());
        }
        let Screen::Live(live) = &self.screen else {
            return Ok(());
        };
        let Some(run) = &live.run else {
            return Ok(());
        };
        match key.code {
            KeyCode::Char(' ') => {
                if run.is_paused() {
                    run.resume();
                    self.say("resumed");
                } else {
                    run.pause();
                    self.say("paused: space resumes");
                }
            }
            KeyCode::Char(c @ ('+' | '=' | '-')) => {
                let factor = if c == '-' { 0.9 } else { 1.1 };
                match run.rate().and_then(|rate| run.set_rate(rate * factor)) {
                    Some(rate) => self.say(format!("rate {rate:.0} req/s")),
                    None => self.say("closed model: its pace is the concurrency (e to edit)"),
                }
            }
            KeyCode::Char('r') => {
                let config = run.config().clone();
                let message = self.message.clone();
                *message.lock() = format!("resetting {} keys ...", config.keys);
                self.runtime.spawn(async move {
                    *message.lock() = match engine::reset_all(&config).await {
                        Ok(()) => format!("limiter state of {} keys reset", config.keys),
                        Err(err) => format!("reset failed: {err:#}"),
                    };
                });
            }
            KeyCode::Char('s') => {
                let snapshot = run.snapshot();
                let dir = live.dir.with_file_name(format!(
                    "{}-at-{}s",
                    live.dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("run"),
                    snapshot.elapsed.as_secs()
                ));
                self.save(&snapshot, &dir);
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts the form's run, or says which fields are wrong.
    fn start_run(&mut self) {
        let config = match self.form.config() {
            Ok(config) => config,
            Err(problems) => {
                let (field, problem) = &problems[0];
                self.say(format!("cannot start: {}: {problem}", field.label()));
                return;
            }
        };
        let metrics = self.form.metrics_urls();
        match self.runtime.block_on(engine::start(config)) {
            Ok(run) => {
                self.runs_started += 1;
                let dir = self.next_dir();
                self.say("");
                self.screen = Screen::Live(Box::new(LiveRun {
                    tracker: Tracker::new(&run),
                    service: ServiceWatch::start(metrics, &self.runtime),
                    run: Some(run),
                    dir,
                    last: None,
                }));
            }
            Err(err) => self.say(format!("cannot start: {err:#}")),
        }
    }

    fn next_dir(&self) -> PathBuf {
        let base = self.options.name.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("tui-{}", now.as_secs())
        });
        let name = if self.runs_started <= 1 {
            base
        } else {
            format!("{base}-{}", self.runs_started)
        };
        self.options.results.join(name)
    }

    /// Stops the run (if any is going), waits for requests in flight, and writes its report.
    fn end_run(&mut self) -> anyhow::Result<()> {
        let Screen::Live(live) = &mut self.screen else {
            return Ok(());
        };
        let Some(run) = live.run.take() else {
            return Ok(());
        };
        run.stop();
        let result = self.runtime.block_on(run.finish())?;
        let dir = live.dir.clone();
        if let Some(last) = &mut live.last {
            last.state = live::RunState::Finished;
        }
        self.save(&result, &dir);
        Ok(())
    }

    fn save(&mut self, result: &RunResult, dir: &Path) {
        let options = SessionOptions {
            command: self.options.command.clone(),
            out_dir: dir.to_path_buf(),
            verify: true,
            service_metrics: Vec::new(),
            ..SessionOptions::default()
        };
        match write_report(result, &options, None) {
            Ok(summary) => {
                let verdict = summary.ledger.as_ref().map_or("", |ledger| {
                    if ledger.passed() {
                        "; ledger passed"
                    } else {
                        "; LEDGER FAILED"
                    }
                });
                self.say(format!("report saved: {}{verdict}", dir.display()));
                self.reports.push(dir.to_path_buf());
            }
            Err(err) => self.say(format!("saving the report failed: {err:#}")),
        }
    }
}
