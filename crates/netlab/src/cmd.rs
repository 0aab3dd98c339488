//! Running `ip` and `tc`: the lab configures the kernel through iproute2, not netlink by hand.

use std::process::Command;

use crate::error::LabError;

/// Runs `program args...`, returns its standard output, or an error with its standard error.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let command = format!("{program} {}", args.join(" "));
    tracing::debug!(%command, "running");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args...`.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run("ip", args)
}
