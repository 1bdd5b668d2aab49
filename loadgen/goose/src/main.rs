//! `sluice-goose`: Goose's own command line (`--host`, `--users`, `--increase-rate`, `--run-time`,
//! `--scenarios`, `--report-file`, ...) with Sluice's scenarios; see `sluice_goose`.

use goose::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = sluice_goose::Settings::from_env()?;
    let mut attack = GooseAttack::initialize()?;
    // Every load run ends by itself: a minute unless the command line bounds it (Goose refuses
    // a default run time beside --iterations or --test-plan, so it is set only without them).
    let bounded = std::env::args().skip(1).any(|arg| {
        ["-t", "--run-time", "--iterations", "--test-plan"]
            .iter()
            .any(|flag| arg.starts_with(flag))
    });
    if !bounded {
        attack = *attack.set_default(GooseDefault::RunTime, 60)?;
    }
    sluice_goose::register(attack, settings)?.execute().await?;
    Ok(())
}
