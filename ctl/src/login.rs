//! `mcpctl login NAME` and `mcpctl logout NAME`.
//!
//! The daemon runs the whole OAuth flow and keeps the tokens; this command only receives the
//! authorization URL, opens it (or prints it for `--no-browser`), and waits on the same
//! connection for the outcome. Ctrl-C closes the connection, which makes the daemon cancel the
//! login and close its callback listener.

use std::io::{BufRead, IsTerminal, Write};
use std::net::Shutdown;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcpd_proto::line::{Line, MAX_CONTROL_LINE, read_line_bounded};
use mcpd_proto::{ControlRequest, ControlResponse};

use crate::client::ControlClient;

/// How long discovery and registration may take before the URL comes back.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Spinner frame interval.
const TICK: Duration = Duration::from_millis(120);

/// `mcpctl login`.
pub fn login(socket: &Path, server: &str, no_browser: bool, browser: Option<&str>) -> Result<()> {
    let cancelled = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&cancelled))
            .context("cannot handle Ctrl-C")?;
    }
    let mut client = ControlClient::connect(socket, START_TIMEOUT)?;
    let request = ControlRequest::Login {
        server: server.to_owned(),
        no_browser,
    };
    let url = match client.request(&request, START_TIMEOUT)? {
        ControlResponse::LoginStarted { url } => url,
        ControlResponse::Error { message, .. } => bail!("login to {server} failed: {message}"),
        ControlResponse::NoSuchServer { server, known } => {
            return Err(crate::no_such_server(&server, &known));
        }
        ControlResponse::Unknown => {
            bail!("this mcpd does not know `login`; is it older than mcpctl?")
        }
        other => bail!("login: mcpd sent an unexpected reply: {other:?}"),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "To log in to {server}, open this URL in a browser:\n\n  {url}\n"
    )?;
    if no_browser {
        writeln!(
            out,
            "After you approve, the browser is sent to http://127.0.0.1:…/callback. If that page \
             does not load (the browser runs on another machine), copy the whole URL from its \
             address bar and paste it here:"
        )?;
    } else if let Err(e) = open_browser(&url, browser) {
        writeln!(
            out,
            "(could not open a browser: {e:#}; open the URL yourself)"
        )?;
    }
    out.flush()?;
    drop(out);

    let (reader, writer) = client.into_parts();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = reader;
        loop {
            let line = match read_line_bounded(&mut reader, MAX_CONTROL_LINE) {
                Ok(Some(Line::Complete(bytes))) => {
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            };
            let end = line.is_none();
            if lines_tx.send(line).is_err() || end {
                return;
            }
        }
    });
    let (paste_tx, pastes) = mpsc::channel::<String>();
    if no_browser {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if !line.trim().is_empty() && paste_tx.send(line).is_err() {
                    return;
                }
            }
        });
    }

    let spinner = std::io::stderr().is_terminal() && !no_browser;
    let frames = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let result = loop {
        if cancelled.load(Ordering::Relaxed) {
            break Err(anyhow::anyhow!("login cancelled"));
        }
        if let Ok(pasted) = pastes.try_recv() {
            let request = ControlRequest::LoginPaste {
                server: server.to_owned(),
                redirect_url: pasted.trim().to_owned(),
            };
            let mut line = serde_json::to_string(&request).context("cannot encode the paste")?;
            line.push('\n');
            (&writer)
                .write_all(line.as_bytes())
                .context("cannot send the pasted URL to mcpd")?;
        }
        match lines.recv_timeout(TICK) {
            Ok(Some(line)) => match serde_json::from_str::<ControlResponse>(&line) {
                Ok(ControlResponse::LoginFinished { ok: true, message }) => break Ok(message),
                Ok(ControlResponse::LoginFinished { ok: false, message }) => {
                    break Err(anyhow::anyhow!("login to {server} failed: {message}"));
                }
                Ok(ControlResponse::Ok) => {
                    eprintln!("mcpctl: URL accepted; finishing the login…");
                }
                Ok(ControlResponse::Error { message, .. }) => {
                    eprintln!("mcpctl: {message}; paste the URL again");
                }
                _ => {}
            },
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!(
                    "mcpd closed the connection before the login ended"
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if spinner {
                    eprint!(
                        "\r{} waiting for the browser (Ctrl-C to cancel)",
                        frames[tick % 4]
                    );
                    tick += 1;
                }
            }
        }
    };
    if spinner && tick > 0 {
        eprint!("\r\x1b[2K");
    }
    // Closing the connection cancels the login if it is still under way.
    let _ = writer.shutdown(Shutdown::Both);
    let message = result?;
    println!("{message}");
    Ok(())
}

/// `mcpctl logout`.
pub fn logout(socket: &Path, server: &str) -> Result<()> {
    let mut client = ControlClient::connect(socket, START_TIMEOUT)?;
    let request = ControlRequest::Logout {
        server: server.to_owned(),
    };
    match client.request(&request, START_TIMEOUT)? {
        ControlResponse::Done { message } => {
            println!("{message}");
            Ok(())
        }
        ControlResponse::Ok => {
            println!("{server}: logged out");
            Ok(())
        }
        ControlResponse::Error { message, .. } => bail!("logout failed: {message}"),
        other => bail!("logout: mcpd sent an unexpected reply: {other:?}"),
    }
}

/// Opens `url` with `--browser`, else `$BROWSER` (a `:`-separated list; `%s` is replaced by
/// the URL, else it is the last argument), else the desktop's opener.
fn open_browser(url: &str, browser: Option<&str>) -> Result<()> {
    let from_env = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let candidates: Vec<String> = match (browser, from_env) {
        (Some(b), _) => vec![b.to_owned()],
        (None, Some(list)) => list.split(':').map(str::to_owned).collect(),
        (None, None) if cfg!(target_os = "macos") => vec!["open".to_owned()],
        (None, None) => vec!["xdg-open".to_owned()],
    };
    let mut last = None;
    for candidate in candidates {
        let mut words = candidate.split_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        let mut args: Vec<String> = words.map(str::to_owned).collect();
        if args.iter().any(|a| a.contains("%s")) {
            for a in &mut args {
                *a = a.replace("%s", url);
            }
        } else {
            args.push(url.to_owned());
        }
        match Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("cannot run {program}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no browser command")))
}
