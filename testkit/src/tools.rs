//! Running the outside programs tests use (k6, promtool, tmux, docker-compose, ...): a missing
//! program is an error naming how to install it, never a skipped test.

use std::{
    io,
    process::{Child, Command, Output},
};

/// The error for a program that would not start, with how to install it.
pub fn missing(program: &str, error: io::Error, install: &str) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot run {program} ({error}): install it with {install}"),
    )
}

/// Runs `command` to its end; a program that cannot start panics with `install`.
pub fn output(command: &mut Command, install: &str) -> Output {
    output_of(command, install).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `command` to its end; a program that cannot start is an error saying how to install it.
pub fn output_of(command: &mut Command, install: &str) -> io::Result<Output> {
    command
        .output()
        .map_err(|error| missing(&program(command), error, install))
}

/// Runs `command`, asserts it succeeded, and returns what it printed (stdout, then stderr).
pub fn run_ok(command: &mut Command, install: &str) -> String {
    let result = output(command, install);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(result.status.success(), "{command:?} failed:\n{said}");
    said
}

/// Starts `command`; a program that cannot start is an error saying how to install it.
pub fn spawn(command: &mut Command, install: &str) -> io::Result<Child> {
    command
        .spawn()
        .map_err(|error| missing(&program(command), error, install))
}

fn program(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_how_to_install_it() {
        let _one_at_a_time = crate::one_test_at_a_time();
        let error = spawn(
            &mut Command::new("sluice-no-such-program"),
            "`apt-get install sluice-no-such-program`",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("cannot run sluice-no-such-program"), "{text}");
        assert!(
            text.contains("apt-get install sluice-no-such-program"),
            "{text}"
        );
    }

    #[test]
    fn run_ok_returns_what_the_program_printed() {
        let _one_at_a_time = crate::one_test_at_a_time();
        let said = run_ok(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            "sh",
        );
        assert_eq!(said, "out\nerr\n");
    }
}
