//! Drawing: the form, the live screen and the help, from plain data only, so the same
//! functions render into a terminal or a test's buffer.

use ratatui::{
    Frame,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    symbols::Marker,
    text::{Line, Span},
    widgets::{
        Axis, Block, Cell, Chart, Clear, Dataset, Gauge, GraphType, Paragraph, Row, Table, Wrap,
    },
};

use super::{
    form::{Field, Form},
    live::{LAG_BOTTLENECK_MS, LiveView, RunState},
};
use crate::wire::ErrorKind;

/// The most chart points shown: the latest minute at the live interval.
const CHART_POINTS: usize = 120;

/// 1234 -> "1.2k": numbers that fit narrow columns.
pub fn human(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e9 {
        format!("{:.1}G", value / 1e9)
    } else if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn key_hint(key: &'static str, what: &'static str) -> [Span<'static>; 2] {
    [key.bold().cyan(), format!(" {what}  ").into()]
}

pub fn draw_form(frame: &mut Frame, form: &Form, message: &str) {
    let [title, body, detail, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Line::from(vec![
            " loadgen ".bold().reversed(),
            "  new run: fill in the parameters, Enter starts".into(),
        ]),
        title,
    );
    let rows = Field::ALL.iter().enumerate().map(|(index, &field)| {
        let selected = index == form.selected;
        let active = form.is_active(field);
        let value = form.value(field);
        let value = if field.is_choice() {
            format!("‹ {value} ›")
        } else if selected {
            format!("{value}▏")
        } else {
            value
        };
        let problem = form.problem(field);
        let mut style = Style::default();
        if !active {
            style = style.fg(Color::DarkGray);
        }
        if selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        Row::new([
            Cell::from(format!(
                "{} {}",
                if selected { "›" } else { " " },
                field.label()
            )),
            Cell::from(value).style(style),
            Cell::from(problem.map_or(String::new(), |p| format!("✗ {p}"))).red(),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(19),
                Constraint::Percentage(45),
                Constraint::Fill(1),
            ],
        )
        .block(Block::bordered().title(" Parameters ")),
        body,
    );
    let field = form.field();
    let detail_text = match form.problem(field) {
        Some(problem) => Line::from(vec![format!("{}: ", field.label()).bold(), problem.red()]),
        None => Line::from(message.to_owned()).yellow(),
    };
    frame.render_widget(
        Paragraph::new(detail_text).wrap(Wrap { trim: true }),
        detail,
    );
    frame.render_widget(
        Line::from(
            [
                key_hint("↑↓", "move"),
                key_hint("type", "edit"),
                key_hint("space ←→", "choose"),
                key_hint("Enter", "start"),
                key_hint("Esc", "quit"),
            ]
            .concat(),
        ),
        footer,
    );
}

pub fn draw_live(frame: &mut Frame, view: &LiveView, help: bool) {
    let [header, charts, tables, bottom, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, view);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    draw_throughput(frame, left, view);
    draw_latency(frame, right, view);
    let [percentiles, targets] =
        Layout::horizontal([Constraint::Length(22), Constraint::Fill(1)]).areas(tables);
    draw_percentiles(frame, percentiles, view);
    draw_targets(frame, targets, view);
    let [generator, denied, service] = Layout::horizontal([
        Constraint::Percentage(30),
        Constraint::Percentage(28),
        Constraint::Percentage(42),
    ])
    .areas(bottom);
    draw_generator(frame, generator, view);
    draw_top_denied(frame, denied, view);
    draw_service(frame, service, view);
    let hints = if view.message.is_empty() {
        Line::from(
            [
                key_hint("space", "pause"),
                key_hint("+/-", "rate"),
                key_hint("r", "reset"),
                key_hint("s", "save"),
                key_hint("e", "edit"),
                key_hint("q", "quit"),
                key_hint("?", "help"),
            ]
            .concat(),
        )
    } else {
        Line::from(view.message.clone()).yellow()
    };
    frame.render_widget(hints, footer);
    if help {
        draw_help(frame);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, view: &LiveView) {
    let state = match view.state {
        RunState::Running => " RUNNING ".black().on_green(),
        RunState::Paused => " PAUSED ".black().on_yellow(),
        RunState::Finished => " FINISHED ".black().on_blue(),
    };
    let rate = view.rate.map_or("closed model".to_string(), |rate| {
        format!("{} req/s", human(rate.round()))
    });
    let totals = &view.totals;
    let mut spans = vec![
        " loadgen ".bold().reversed(),
        " ".into(),
        state,
        format!(
            " {:.1}/{:.0} s  {rate}  ",
            view.elapsed.as_secs_f64(),
            view.duration.as_secs_f64()
        )
        .into(),
        format!("allowed {}", human(totals.allowed as f64)).green(),
        "  ".into(),
        format!("denied {}", human(totals.denied as f64)).yellow(),
        "  ".into(),
    ];
    // Only rules with bans or in shadow mode produce these: shown when they occur.
    if totals.banned > 0 {
        spans.push(format!("banned {}", human(totals.banned as f64)).magenta());
        spans.push("  ".into());
    }
    if totals.shadow_denied > 0 {
        spans.push(format!("shadow-denied {}", human(totals.shadow_denied as f64)).cyan());
        spans.push("  ".into());
    }
    spans.push(format!("errors {}", human(totals.errors() as f64)).red());
    frame.render_widget(Line::from(spans), area);
}

fn axis_labels(low: f64, high: f64, unit: &str) -> Vec<Line<'static>> {
    vec![
        Line::from(format!("{}{unit}", human(low))),
        Line::from(format!("{}{unit}", human(high))),
    ]
}

fn chart<'a>(
    title: &'a str,
    datasets: Vec<Dataset<'a>>,
    x: [f64; 2],
    y_max: f64,
    unit: &str,
) -> Chart<'a> {
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    Chart::new(datasets)
        .block(Block::bordered().title(title))
        .x_axis(
            Axis::default()
                .bounds(x)
                .labels(axis_labels(x[0], x[1], "s"))
                .style(Style::default().dark_gray()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, y_max])
                .labels(axis_labels(0.0, y_max, unit))
                .style(Style::default().dark_gray()),
        )
        .legend_position(Some(ratatui::widgets::LegendPosition::TopLeft))
}

fn x_bounds(times: impl Iterator<Item = f64> + Clone) -> [f64; 2] {
    let low = times.clone().next().unwrap_or(0.0);
    let high = times.last().unwrap_or(1.0).max(low + 1.0);
    [low, high]
}

fn draw_throughput(frame: &mut Frame, area: Rect, view: &LiveView) {
    let points = &view.throughput[view.throughput.len().saturating_sub(CHART_POINTS)..];
    // Stacked: each line is its outcome plus everything drawn below it.
    let errors: Vec<(f64, f64)> = points.iter().map(|p| (p.t, p.errors)).collect();
    let denied: Vec<(f64, f64)> = points.iter().map(|p| (p.t, p.errors + p.denied)).collect();
    let allowed: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.t, p.errors + p.denied + p.allowed))
        .collect();
    let y_max = allowed.iter().map(|p| p.1).fold(0.0, f64::max);
    let line = |name, color, data| {
        Dataset::default()
            .name(name)
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(color))
            .data(data)
    };
    let x = x_bounds(points.iter().map(|p| p.t));
    frame.render_widget(
        chart(
            " Throughput req/s, stacked ",
            vec![
                line("allowed", Color::Green, &allowed),
                line("denied", Color::Yellow, &denied),
                line("errors", Color::Red, &errors),
            ],
            x,
            y_max,
            "",
        ),
        area,
    );
}

fn draw_latency(frame: &mut Frame, area: Rect, view: &LiveView) {
    let points = &view.latency[view.latency.len().saturating_sub(CHART_POINTS)..];
    let series = |f: fn(&super::live::LatencyPoint) -> f64| -> Vec<(f64, f64)> {
        points.iter().map(|p| (p.t, f(p))).collect()
    };
    let (p50, p95, p99) = (series(|p| p.p50), series(|p| p.p95), series(|p| p.p99));
    let y_max = p99.iter().map(|p| p.1).fold(0.0, f64::max);
    let line = |name, color, data| {
        Dataset::default()
            .name(name)
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(color))
            .data(data)
    };
    let x = x_bounds(points.iter().map(|p| p.t));
    frame.render_widget(
        chart(
            " Latency ms ",
            vec![
                line("p50", Color::Green, &p50),
                line("p95", Color::Yellow, &p95),
                line("p99", Color::Red, &p99),
            ],
            x,
            y_max,
            "",
        ),
        area,
    );
}

fn draw_percentiles(frame: &mut Frame, area: Rect, view: &LiveView) {
    let rows = view
        .percentiles
        .iter()
        .map(|(name, value)| Row::new([Cell::from(*name), Cell::from(format!("{value:>9.3}"))]));
    frame.render_widget(
        Table::new(rows, [Constraint::Length(6), Constraint::Fill(1)])
            .block(Block::bordered().title(" Last 5 s, ms ")),
        area,
    );
}

fn draw_targets(frame: &mut Frame, area: Rect, view: &LiveView) {
    let rows = view.targets.iter().map(|row| {
        let errors = Cell::from(human(row.errors as f64));
        Row::new([
            Cell::from(row.url.clone()),
            Cell::from(format!("{:>8}", human(row.rate.round()))),
            if row.errors > 0 { errors.red() } else { errors },
            Cell::from(format!("{:>8.3}", row.p99_ms)),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Length(8),
            ],
        )
        .header(Row::new(["target", "   req/s", "errors", "  p99 ms"]).dark_gray())
        .block(Block::bordered().title(format!(" Targets · {} ", view.title))),
        area,
    );
}

fn draw_generator(frame: &mut Frame, area: Rect, view: &LiveView) {
    let block = Block::bordered().title(" Generator ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [gauge, errors] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    let bottleneck = view.is_bottleneck();
    frame.render_widget(
        Gauge::default()
            .ratio((view.lag_p99_ms / LAG_BOTTLENECK_MS).clamp(0.0, 1.0))
            .label(format!(
                "lag p50 {:.3} p99 {:.3} ms",
                view.lag_p50_ms, view.lag_p99_ms
            ))
            .gauge_style(Style::default().fg(if bottleneck { Color::Red } else { Color::Green })),
        gauge,
    );
    let totals = &view.totals;
    let mut lines: Vec<Line> = ErrorKind::ALL
        .iter()
        .zip([
            totals.timeout,
            totals.unavailable,
            totals.refused,
            totals.invalid_argument,
            totals.other,
        ])
        .filter(|(_, count)| *count > 0)
        .map(|(kind, count)| Line::from(format!("{} {}", kind.label(), human(count as f64))).red())
        .collect();
    if bottleneck {
        lines.insert(0, Line::from("GENERATOR IS THE BOTTLENECK").red().bold());
    }
    if lines.is_empty() {
        lines.push(Line::from("no errors").dark_gray());
    }
    frame.render_widget(Paragraph::new(lines), errors);
}

fn draw_top_denied(frame: &mut Frame, area: Rect, view: &LiveView) {
    let lines: Vec<Line> = if view.top_denied.is_empty() {
        vec![Line::from("none denied yet").dark_gray()]
    } else {
        view.top_denied
            .iter()
            .map(|(key, denied)| Line::from(format!("{key} {}", human(*denied as f64))))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Most denied keys ")),
        area,
    );
}

fn draw_service(frame: &mut Frame, area: Rect, view: &LiveView) {
    let lines: Vec<Line> = if view.service.is_empty() {
        vec![Line::from("give Service /metrics URLs in the form (e to edit)").dark_gray()]
    } else {
        view.service
            .iter()
            .flat_map(|row| {
                let node = row
                    .url
                    .split_once("://")
                    .map_or(row.url.as_str(), |(_, rest)| rest);
                let node = node.trim_end_matches("/metrics").to_owned();
                match &row.counts {
                    Ok(counts) => {
                        let errors = format!("  store err {}", human(counts.store_errors as f64));
                        [
                            Line::from(vec![
                                node.bold(),
                                if counts.store_errors > 0 {
                                    errors.red()
                                } else {
                                    errors.into()
                                },
                                if counts.fallback_active {
                                    " FALLBACK".red().bold()
                                } else {
                                    "".into()
                                },
                            ]),
                            Line::from(vec![
                                format!(" allowed {}", human(counts.allowed as f64)).green(),
                                format!("  denied {}", human(counts.denied as f64)).yellow(),
                            ]),
                        ]
                    }
                    Err(problem) => [
                        Line::from(node.bold()),
                        Line::from(format!(" {problem}")).red(),
                    ],
                }
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Service's view (/metrics) ")),
        area,
    );
}

pub fn draw_help(frame: &mut Frame) {
    let area = frame.area();
    let width = area.width.min(58);
    let height = area.height.min(9);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines = [
        ("space", "pause / resume sending"),
        ("+  -", "rate up / down by 10% (open model)"),
        ("r", "reset the limiter state of every key"),
        ("s", "save a report of the run so far"),
        ("e", "stop, save, and edit the parameters"),
        ("q", "stop, save the report into results/, quit"),
        ("?", "show / hide this help"),
    ]
    .map(|(key, what)| Line::from(vec![format!("{key:>6}  ").bold().cyan(), what.into()]));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines.to_vec())
            .block(Block::bordered().title(" Keys "))
            .alignment(Alignment::Left),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::{Terminal, backend::TestBackend, buffer::Buffer};

    use super::*;
    use crate::{
        stats::Counts,
        tui::live::{LatencyPoint, ServiceCounts, ServiceRow, TargetRow, ThroughputPoint},
    };

    fn render(width: u16, height: u16, draw: impl FnOnce(&mut Frame)) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(draw).unwrap();
        screen_text(terminal.backend().buffer())
    }

    fn screen_text(buffer: &Buffer) -> String {
        let area = buffer.area;
        (0..area.height)
            .map(|y| {
                (0..area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn live_view() -> LiveView {
        LiveView {
            title: "200 keys zipf:1.1".into(),
            state: RunState::Running,
            elapsed: Duration::from_millis(12_300),
            duration: Duration::from_secs(60),
            rate: Some(2_000.0),
            totals: Counts {
                allowed: 12_345,
                denied: 6_789,
                timeout: 3,
                ..Counts::default()
            },
            throughput: (1..=20)
                .map(|i| ThroughputPoint {
                    t: i as f64 * 0.5,
                    allowed: 1_200.0,
                    denied: 790.0,
                    errors: 10.0,
                })
                .collect(),
            latency: (1..=20)
                .map(|i| LatencyPoint {
                    t: i as f64 * 0.5,
                    p50: 0.4,
                    p95: 1.1,
                    p99: 2.5 + i as f64 / 10.0,
                })
                .collect(),
            percentiles: vec![
                ("p50", 0.412),
                ("p90", 0.9),
                ("p95", 1.1),
                ("p99", 4.25),
                ("p99.9", 9.5),
                ("max", 31.0),
            ],
            targets: vec![
                TargetRow {
                    url: "grpc://127.0.0.1:50051".into(),
                    rate: 1_001.0,
                    errors: 3,
                    p99_ms: 4.375,
                },
                TargetRow {
                    url: "grpc://127.0.0.1:50061".into(),
                    rate: 999.0,
                    errors: 0,
                    p99_ms: 3.5,
                },
            ],
            top_denied: vec![("key-0".into(), 4_321), ("key-1".into(), 1_234)],
            lag_p50_ms: 0.018,
            lag_p99_ms: 0.2,
            service: vec![ServiceRow {
                url: "http://127.0.0.1:8080/metrics".into(),
                counts: Ok(ServiceCounts {
                    allowed: 12_000,
                    denied: 6_500,
                    store_errors: 2,
                    fallback_active: true,
                }),
            }],
            message: String::new(),
        }
    }

    #[test]
    fn the_form_shows_every_field_and_the_reason_next_to_a_bad_one() {
        let mut form = Form::default();
        form.rate = "fast".into();
        form.selected = 3;
        let screen = render(100, 24, |frame| draw_form(frame, &form, ""));
        for field in Field::ALL {
            assert!(
                screen.contains(field.label()),
                "{} missing:\n{screen}",
                field.label()
            );
        }
        assert!(screen.contains("‹ grpc ›"), "{screen}");
        assert!(screen.contains("127.0.0.1:50051"), "{screen}");
        let rate_line = screen.lines().find(|l| l.contains("Rate (req/s)")).unwrap();
        assert!(
            rate_line.contains("fast") && rate_line.contains("✗"),
            "{rate_line}"
        );
        // The selected field's whole reason, below the list.
        assert!(
            screen.contains("Rate (req/s): requests per second, above 0"),
            "{screen}"
        );
        form.rate = "1500".into();
        let screen = render(100, 24, |frame| {
            draw_form(frame, &form, "cannot start: refused")
        });
        assert!(!screen.contains('✗'), "{screen}");
        assert!(screen.contains("cannot start: refused"), "{screen}");
    }

    #[test]
    fn bans_and_shadow_denials_are_shown_when_they_occur() {
        let mut view = live_view();
        let quiet = render(120, 32, |frame| draw_live(frame, &view, false));
        assert!(
            !quiet.contains("banned") && !quiet.contains("shadow-denied"),
            "{quiet}"
        );
        view.totals.banned = 42;
        view.totals.shadow_denied = 7;
        let screen = render(120, 32, |frame| draw_live(frame, &view, false));
        for expected in ["banned 42", "shadow-denied 7", "errors 3"] {
            assert!(screen.contains(expected), "{expected} missing:\n{screen}");
        }
    }

    #[test]
    fn the_live_screen_shows_counts_percentiles_targets_and_the_services_view() {
        let view = live_view();
        let screen = render(120, 32, |frame| draw_live(frame, &view, false));
        for expected in [
            "RUNNING",
            "12.3/60 s",
            "2000 req/s",
            "allowed 12.3k",
            "denied 6789",
            "errors 3",
            "200 keys zipf:1.1",
            "grpc://127.0.0.1:50051",
            "1001",
            "4.375",
            "4.250",
            "31.000",
            "key-0 4321",
            "timeout 3",
            "lag p50 0.018 p99 0.200 ms",
            "127.0.0.1:8080",
            "store err 2",
            "FALLBACK",
            "allowed 12.0k",
        ] {
            assert!(screen.contains(expected), "`{expected}` missing:\n{screen}");
        }
        assert!(!screen.contains("BOTTLENECK"), "{screen}");
    }

    #[test]
    fn a_lagging_generator_is_flagged() {
        let mut view = live_view();
        view.lag_p99_ms = 25.0;
        view.state = RunState::Paused;
        let screen = render(120, 32, |frame| draw_live(frame, &view, false));
        assert!(screen.contains("BOTTLENECK"), "{screen}");
        assert!(screen.contains("PAUSED"), "{screen}");
    }

    #[test]
    fn every_panel_fits_80_by_24() {
        let view = live_view();
        let screen = render(80, 24, |frame| draw_live(frame, &view, false));
        for title in [
            "Throughput",
            "Latency ms",
            "Last 5 s",
            "Targets",
            "Generator",
            "Most denied",
            "Service's view",
            "p99.9",
            "grpc://127.0.0.1:50061",
            "q quit",
        ] {
            assert!(
                screen.contains(title),
                "`{title}` missing at 80x24:\n{screen}"
            );
        }
        let with_help = render(80, 24, |frame| draw_live(frame, &view, true));
        assert!(with_help.contains("rate up / down by 10%"), "{with_help}");
        // Too small to be useful still draws without panicking.
        render(20, 5, |frame| draw_live(frame, &view, true));
        render(20, 5, |frame| draw_form(frame, &Form::default(), ""));
    }
}
