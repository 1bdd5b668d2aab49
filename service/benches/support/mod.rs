//! What every written benchmark report records: the commit it measured and the machine.

use std::process::Command;

// Only the Redis benchmarks use it; each benchmark compiles this module on its own.
#[allow(dead_code)]
pub mod redis_store;

/// Stdout of a command, trimmed; "unknown" when it cannot run.
pub fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The short commit, marked when the work tree has uncommitted changes (outside results/,
/// which the benchmarks themselves write).
pub fn commit() -> String {
    let commit = command_output("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = !command_output(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ":/",
            ":(top,exclude)results",
        ],
    )
    .is_empty();
    if dirty {
        format!("`{commit}` (with uncommitted changes)")
    } else {
        format!("`{commit}`")
    }
}

/// Cores and CPU model.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// Writes `report` to results/benchmarks/`file` and says where.
pub fn write_report(file: &str, report: &str) {
    let path = format!(
        "{}/../results/benchmarks/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(&path, report).expect("write the report");
    println!("wrote {path}");
}
