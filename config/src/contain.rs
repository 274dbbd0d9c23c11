//! A server's `"sandbox"` and `"limits"` keys (see `daemon/src/sandbox.rs` and
//! `daemon/src/limits.rs` for what they do).
//!
//! ```json
//! "sandbox": false
//! "sandbox": {"allow": ["~/.aws"], "network": [443]}
//! "sandbox": {"mode": "strict", "read": ["~/data"], "write": ["~/out"], "network": false}
//! "limits": {"memory": "1G", "tasks": 256, "cpu": 0.5, "openFiles": 4096}
//! ```

use std::path::PathBuf;

use serde_json::Value;

/// How a server's files are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Everything except the protected set (the default).
    #[default]
    Protect,
    /// Only what the server needs to run, and what `read`/`write` list.
    Strict,
    /// No sandbox (`"sandbox": false`).
    Off,
}

/// Which TCP ports a server may use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// Any (the default).
    #[default]
    Any,
    /// No TCP connect or bind at all (`"network": false`).
    None,
    /// Connect and bind only to these ports (`"network": [443, 8080]`).
    Ports(Vec<u16>),
}

/// A server's `"sandbox"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxSpec {
    /// `protect` (default), `strict` or off.
    pub mode: SandboxMode,
    /// Protected paths handed back to this server (`allow`).
    pub allow: Vec<PathBuf>,
    /// Extra paths it may read (`read`, strict mode; also allowed in protect mode).
    pub read: Vec<PathBuf>,
    /// Extra paths it may read and write (`write`).
    pub write: Vec<PathBuf>,
    /// TCP ports.
    pub network: Network,
}

/// A server's `"limits"`; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Bytes of memory (`"memory": "1G"`).
    pub memory: Option<u64>,
    /// Processes and threads (`"tasks": 256`).
    pub tasks: Option<u64>,
    /// CPUs' worth of time (`"cpu": 0.5`).
    pub cpu: Option<f64>,
    /// Open file descriptors per process (`"openFiles": 4096`).
    pub open_files: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some()
            || self.tasks.is_some()
            || self.cpu.is_some()
            || self.open_files.is_some()
    }
}

/// A server's sandbox and limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Containment {
    /// `"sandbox"`.
    pub sandbox: SandboxSpec,
    /// `"limits"`.
    pub limits: Limits,
}

fn kind(v: &Value) -> &'static str {
    super::kind_of(v)
}

/// Why a sandbox path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `~` with no `HOME` to put in its place.
    #[error("`~` needs HOME to be set")]
    NoHome,
    /// Neither absolute nor under `~` (the path as written).
    #[error("\"{0}\" is not an absolute path (write \"/...\" or \"~/...\")")]
    NotAbsolute(String),
}

/// Expands a leading `~` or `~/` with `home`; other paths must be absolute.
pub fn expand_path(s: &str, home: Option<&str>) -> Result<PathBuf, PathError> {
    let expanded = if s == "~" || s.starts_with("~/") {
        let home = home.ok_or(PathError::NoHome)?;
        format!("{home}{}", &s[1..])
    } else {
        s.to_owned()
    };
    let p = PathBuf::from(&expanded);
    if !p.is_absolute() {
        return Err(PathError::NotAbsolute(s.to_owned()));
    }
    Ok(p)
}

/// Reads one string value with `${VAR}` expanded; errors are `(json path, message)`.
pub type StringsFn<'a> = dyn Fn(&Value, &str) -> Result<String, (String, String)> + 'a;

/// Parses `"sandbox"`. Strings have had `${VAR}` expanded by `strings`; errors are
/// `(json path, message)`.
pub fn parse_sandbox(
    v: &Value,
    at: &str,
    home: Option<&str>,
    strings: &StringsFn<'_>,
) -> Result<SandboxSpec, (String, String)> {
    let err = |path: &str, m: String| (path.to_owned(), m);
    let mut spec = SandboxSpec::default();
    match v {
        Value::Bool(true) => return Ok(spec),
        Value::Bool(false) => {
            spec.mode = SandboxMode::Off;
            return Ok(spec);
        }
        Value::Object(_) => {}
        other => {
            return Err(err(
                at,
                format!("expected false, true or an object, found {}", kind(other)),
            ));
        }
    }
    let Value::Object(obj) = v else {
        return Ok(spec);
    };
    let paths = |value: &Value, at: &str| -> Result<Vec<PathBuf>, (String, String)> {
        let items = value.as_array().ok_or_else(|| {
            err(
                at,
                format!("expected an array of paths, found {}", kind(value)),
            )
        })?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{at}[{i}]");
            let s = strings(item, &at)?;
            out.push(expand_path(&s, home).map_err(|e| err(&at, e.to_string()))?);
        }
        Ok(out)
    };
    for (key, value) in obj {
        let at = format!("{at}.{key}");
        match key.as_str() {
            "mode" => {
                spec.mode = match value.as_str() {
                    Some("protect") => SandboxMode::Protect,
                    Some("strict") => SandboxMode::Strict,
                    Some("off") => SandboxMode::Off,
                    _ => {
                        return Err(err(
                            &at,
                            format!(
                                "expected \"protect\", \"strict\" or \"off\", found {}",
                                value
                            ),
                        ));
                    }
                }
            }
            "allow" => spec.allow = paths(value, &at)?,
            "read" => spec.read = paths(value, &at)?,
            "write" => spec.write = paths(value, &at)?,
            "network" => {
                spec.network = match value {
                    Value::Bool(true) => Network::Any,
                    Value::Bool(false) => Network::None,
                    Value::Array(items) => {
                        let mut ports = Vec::new();
                        for (i, p) in items.iter().enumerate() {
                            let port = p
                                .as_u64()
                                .and_then(|n| u16::try_from(n).ok())
                                .filter(|n| *n > 0)
                                .ok_or_else(|| {
                                    err(
                                        &format!("{at}[{i}]"),
                                        format!("expected a TCP port 1-65535, found {p}"),
                                    )
                                })?;
                            ports.push(port);
                        }
                        Network::Ports(ports)
                    }
                    other => {
                        return Err(err(
                            &at,
                            format!(
                                "expected true, false or an array of ports, found {}",
                                kind(other)
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(err(
                    &at,
                    format!(
                        "unknown sandbox key `{other}`; expected mode, allow, read, write or network"
                    ),
                ));
            }
        }
    }
    Ok(spec)
}

/// Parses `"limits"`.
pub fn parse_limits(v: &Value, at: &str) -> Result<Limits, (String, String)> {
    let err = |path: &str, m: String| (path.to_owned(), m);
    let obj = v
        .as_object()
        .ok_or_else(|| err(at, format!("expected an object, found {}", kind(v))))?;
    let mut limits = Limits::default();
    for (key, value) in obj {
        let at = format!("{at}.{key}");
        let count = |value: &Value| {
            value.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                err(
                    &at,
                    format!("expected a positive whole number, found {value}"),
                )
            })
        };
        match key.as_str() {
            "memory" => {
                limits.memory = Some(match value {
                    Value::String(s) => parse_size(s).map_err(|e| err(&at, e.to_string()))?,
                    Value::Number(_) => count(value)?,
                    other => {
                        return Err(err(
                            &at,
                            format!("expected a size such as \"512M\" or \"1G\", found {other}"),
                        ));
                    }
                });
            }
            "tasks" => limits.tasks = Some(count(value)?),
            "openFiles" => limits.open_files = Some(count(value)?),
            "cpu" => {
                limits.cpu = Some(
                    value
                        .as_f64()
                        .filter(|c| *c > 0.0 && *c <= 1024.0)
                        .ok_or_else(|| {
                            err(
                                &at,
                                format!(
                                    "expected a number of CPUs such as 0.5 or 2, found {value}"
                                ),
                            )
                        })?,
                );
            }
            other => {
                return Err(err(
                    &at,
                    format!("unknown limit `{other}`; expected memory, tasks, cpu or openFiles"),
                ));
            }
        }
    }
    Ok(limits)
}

/// Why a size (`"512M"`) was refused; each carries the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// A letter that is not K, M, G or T.
    #[error("unknown unit in \"{0}\"; use K, M, G or T")]
    UnknownUnit(String),
    /// Not a number before the unit.
    #[error("\"{0}\" is not a size such as \"512M\" or \"1G\"")]
    NotANumber(String),
    /// Zero or negative.
    #[error("\"{0}\": a size must be positive")]
    NotPositive(String),
}

/// `"512M"`, `"1G"`, `"1.5G"`, `"4096K"`, `"100000"` (bytes) → bytes. Binary units.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(SizeError::UnknownUnit(s.to_owned())),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| SizeError::NotANumber(s.to_owned()))?;
    if n.is_nan() || n <= 0.0 {
        return Err(SizeError::NotPositive(s.to_owned()));
    }
    Ok((n * mult as f64) as u64)
}

/// `1073741824` → `1G`, `536870912` → `512M`.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= m {
            let v = bytes as f64 / m as f64;
            return if (v - v.round()).abs() < 0.05 {
                format!("{}{unit}", v.round() as u64)
            } else {
                format!("{v:.1}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1X"), Err(SizeError::UnknownUnit("1X".into())));
        assert_eq!(parse_size("-1G"), Err(SizeError::NotPositive("-1G".into())));
        assert_eq!(parse_size("G"), Err(SizeError::NotANumber("G".into())));
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(1536 << 20), "1.5G");
    }

    #[test]
    fn sandbox_values_parse_and_bad_ones_name_the_field() {
        let strings = |v: &Value, at: &str| {
            v.as_str()
                .map(str::to_owned)
                .ok_or((at.to_owned(), "not a string".to_owned()))
        };
        let p = |v: Value| parse_sandbox(&v, "s", Some("/home/u"), &strings);
        assert_eq!(
            p(serde_json::json!(false)).map(|s| s.mode),
            Ok(SandboxMode::Off)
        );
        let s = p(serde_json::json!({"allow": ["~/.aws"], "network": [443]})).expect("valid");
        assert_eq!(s.allow, vec![PathBuf::from("/home/u/.aws")]);
        assert_eq!(s.network, Network::Ports(vec![443]));
        assert_eq!(
            p(serde_json::json!({"network": [70000]})).map_err(|e| e.0),
            Err("s.network[0]".to_owned())
        );
        assert_eq!(
            p(serde_json::json!({"read": ["relative"]})).map_err(|e| e.0),
            Err("s.read[0]".to_owned())
        );
        assert!(p(serde_json::json!({"mode": "lax"})).is_err());
    }
}
