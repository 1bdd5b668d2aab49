//! `sluice-goose`: Goose's own command line (`--host`, `--users`, `--hatch-rate`, `--run-time`,
//! `--scenarios`, `--report-file`, ...) with Sluice's scenarios; see `sluice_goose`.

use goose::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = sluice_goose::Settings::from_env()?;
    sluice_goose::register(GooseAttack::initialize()?, settings)?
        .execute()
        .await?;
    Ok(())
}
