//! Hand-parsed command line: seven flags do not justify clap's start-up cost and size.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use mcpd_proto::DEFAULT_PROFILE;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Attach to the daemon and relay stdio.
    Relay(Options),
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// Options of a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Profile to attach to.
    pub profile: String,
    /// Socket path given with `--socket`, overriding the environment.
    pub socket: Option<PathBuf>,
    /// How long to keep trying to reconnect after the connection drops; zero: never.
    pub reconnect_timeout: Duration,
    /// Whether to start the daemon when none answers (`--no-autostart` turns it off; so does
    /// `MCPD_NO_AUTOSTART`, which `main` applies).
    pub autostart: bool,
    /// Hand the client's stdio to the daemon instead of relaying (`--direct`; so does
    /// `MCP_SHIM_DIRECT`, which `main` applies).
    pub direct: bool,
}

/// Default of `--reconnect-timeout`.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Usage text for `--help`.
pub const HELP: &str = "\
mcp-shim: relays an MCP client's stdio to the per-user mcpd daemon

Usage: mcp-shim [--profile NAME] [--socket PATH] [--reconnect-timeout SECS] [--no-autostart]
                [--direct]

MCP clients launch mcp-shim as if it were an MCP stdio server.

Options:
  --profile NAME            profile whose servers the session sees (default: default)
  --socket PATH             daemon socket (default: $MCPD_SOCKET, else
                            $XDG_RUNTIME_DIR/mcpd/mcpd.sock, else /tmp/mcpd-$UID/mcpd.sock)
  --reconnect-timeout SECS  when the daemon goes away (a restart), keep trying to reconnect
                            and resume the session for this long (default: 30; 0: never)
  --no-autostart            when no daemon answers, fail instead of starting mcpd in the
                            background (also: MCPD_NO_AUTOSTART=1)
  --direct                  hand the client's stdin and stdout to mcpd and leave the data
                            path (also: MCP_SHIM_DIRECT=1): faster calls; when mcpd stops or
                            restarts on purpose it hands them back and the session resumes,
                            but when it crashes the session ends (mcp-shim exits 1, requests
                            in flight get no answer, the client must start a new session).
                            A terminal or a file as stdin or stdout is relayed as usual
  -h, --help                print this help
  -V, --version             print the version

Environment:
  MCP_SHIM_PIPES=0          relay the session's data over the socket instead of the pair
                            of pipes the shim hands a daemon that takes them
  MCP_SHIM_DEBUG=1          say on stderr why the relay uses the socket
";

/// Parses the arguments after the program name. The error is one line for stderr.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut opts = Options {
        profile: DEFAULT_PROFILE.to_owned(),
        socket: None,
        reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
        autostart: true,
        direct: false,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = split_flag(&arg);
        let mut value = |name: &str| -> Result<OsString, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value; see --help"))
        };
        match flag.as_deref() {
            Some("-h" | "--help") if inline.is_none() => return Ok(Command::Help),
            Some("-V" | "--version") if inline.is_none() => return Ok(Command::Version),
            Some("--no-autostart") if inline.is_none() => opts.autostart = false,
            Some("--direct") if inline.is_none() => opts.direct = true,
            Some("--profile") => {
                let v = value("--profile")?;
                opts.profile = v
                    .into_string()
                    .map_err(|v| format!("--profile {} is not valid UTF-8", v.to_string_lossy()))?;
            }
            Some("--socket") => opts.socket = Some(PathBuf::from(value("--socket")?)),
            Some("--reconnect-timeout") => {
                opts.reconnect_timeout =
                    seconds("--reconnect-timeout", &value("--reconnect-timeout")?)?;
            }
            _ => {
                let what = if arg.as_bytes().starts_with(b"-") {
                    "unknown option"
                } else {
                    "unexpected argument"
                };
                return Err(format!("{what} '{}'; see --help", arg.to_string_lossy()));
            }
        }
    }
    Ok(Command::Relay(opts))
}

/// A non-negative number of seconds, fractions allowed (`0.5`).
fn seconds(flag: &str, value: &OsStr) -> Result<Duration, String> {
    value
        .to_str()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| {
            format!(
                "{flag} {} is not a number of seconds (such as 30, 0.5 or 0)",
                value.to_string_lossy()
            )
        })
}

/// Splits `--flag=value` into the flag and its inline value; other arguments come back whole.
/// The flag is `None` when it is not valid UTF-8 (no known flag is).
fn split_flag(arg: &OsStr) -> (Option<String>, Option<OsString>) {
    let bytes = arg.as_bytes();
    if bytes.starts_with(b"--")
        && let Some(eq) = bytes.iter().position(|&b| b == b'=')
    {
        let flag = std::str::from_utf8(&bytes[..eq]).ok().map(str::to_owned);
        return (flag, Some(OsStr::from_bytes(&bytes[eq + 1..]).to_owned()));
    }
    (arg.to_str().map(str::to_owned), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    fn relay(profile: &str, socket: Option<&str>) -> Command {
        Command::Relay(Options {
            profile: profile.into(),
            socket: socket.map(PathBuf::from),
            reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
            autostart: true,
            direct: false,
        })
    }

    #[test]
    fn no_arguments_attach_to_the_default_profile() {
        assert_eq!(parse_strs(&[]), Ok(relay("default", None)));
    }

    #[test]
    fn profile_and_socket_in_both_spellings() {
        assert_eq!(
            parse_strs(&["--profile", "work", "--socket", "/s"]),
            Ok(relay("work", Some("/s")))
        );
        assert_eq!(
            parse_strs(&["--socket=/a=b", "--profile=x"]),
            Ok(relay("x", Some("/a=b")))
        );
    }

    #[test]
    fn reconnect_timeout_takes_seconds_with_fractions_and_zero() {
        let timeout = |args: &[&str]| match parse_strs(args) {
            Ok(Command::Relay(o)) => Ok(o.reconnect_timeout),
            Ok(other) => panic!("not a relay: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(timeout(&[]), Ok(Duration::from_secs(30)));
        assert_eq!(
            timeout(&["--reconnect-timeout", "0.5"]),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(timeout(&["--reconnect-timeout=0"]), Ok(Duration::ZERO));
        for bad in ["-1", "soon", "inf", "NaN", ""] {
            let err = timeout(&["--reconnect-timeout", bad]).unwrap_err();
            assert!(err.contains("is not a number of seconds"), "{err}");
        }
    }

    #[test]
    fn no_autostart_is_a_flag_without_a_value() {
        let autostart = |args: &[&str]| match parse_strs(args) {
            Ok(Command::Relay(o)) => Ok(o.autostart),
            Ok(other) => panic!("not a relay: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(autostart(&[]), Ok(true));
        assert_eq!(autostart(&["--no-autostart", "--profile", "p"]), Ok(false));
        assert_eq!(
            autostart(&["--no-autostart=yes"]),
            Err("unknown option '--no-autostart=yes'; see --help".into())
        );
    }

    #[test]
    fn direct_is_a_flag_without_a_value_and_off_by_default() {
        let direct = |args: &[&str]| match parse_strs(args) {
            Ok(Command::Relay(o)) => Ok(o.direct),
            Ok(other) => panic!("not a relay: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(direct(&[]), Ok(false));
        assert_eq!(direct(&["--profile", "p", "--direct"]), Ok(true));
        assert_eq!(
            direct(&["--direct=1"]),
            Err("unknown option '--direct=1'; see --help".into())
        );
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_strs(&["--help"]), Ok(Command::Help));
        assert_eq!(parse_strs(&["--profile", "p", "-V"]), Ok(Command::Version));
    }

    #[test]
    fn unknown_flags_missing_values_and_stray_arguments_are_errors() {
        let err = parse_strs(&["--frobnicate"]).unwrap_err();
        assert_eq!(err, "unknown option '--frobnicate'; see --help");
        let err = parse_strs(&["--profile"]).unwrap_err();
        assert_eq!(err, "--profile needs a value; see --help");
        let err = parse_strs(&["serve"]).unwrap_err();
        assert_eq!(err, "unexpected argument 'serve'; see --help");
        assert!(parse_strs(&["--help=yes"]).is_err());
    }
}
