//! The configuration file (`--config`): a TOML table whose keys are the long flag names with
//! `_` for `-`. Its values become arguments placed before the command line's, so flags and
//! environment variables win over the file; a key that is no setting is refused by name.

use clap::parser::ValueSource;
use std::ffi::OsString;
use std::path::Path;

/// The file's settings as arguments, leaving out those the command line or the environment
/// set.
pub(super) fn arguments(
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
    path: &Path,
) -> Result<Vec<OsString>, clap::Error> {
    let io = |what: String| cmd.clone().error(clap::error::ErrorKind::Io, what);
    let text = std::fs::read_to_string(path)
        .map_err(|e| io(format!("cannot read --config {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| io(format!("--config {}: {e}", path.display())))?;
    let mut from_file: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == key.as_str()) else {
            return Err(io(format!(
                "--config {}: unknown setting `{key}`",
                path.display()
            )));
        };
        let Some(long) = arg.get_long().filter(|_| key != "config") else {
            return Err(io(format!(
                "--config {}: `{key}` cannot be set in a file",
                path.display()
            )));
        };
        if matches!(
            matches.value_source(&key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(io(format!(
                "--config {}: `{key}` has an unsupported value",
                path.display()
            ))),
        };
        // A switch (`--flag`) is given or left out; a boolean that takes a value
        // (`--flag=false`) is given its value.
        let switch = !arg.get_action().takes_values();
        match &value {
            toml::Value::Boolean(true) if switch => from_file.push(format!("--{long}").into()),
            toml::Value::Boolean(false) if switch => {}
            toml::Value::Array(items) => {
                for item in items {
                    from_file.push(format!("--{long}={}", scalar(item)?).into());
                }
            }
            other => from_file.push(format!("--{long}={}", scalar(other)?).into()),
        }
    }
    Ok(from_file)
}
