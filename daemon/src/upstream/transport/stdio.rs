//! The stdio transport: JSON lines on a child's stdin and stdout. The child itself (spawn,
//! sandbox, stop sequence) is [`super::super::process::Process`].

use futures_util::StreamExt;

use super::Event;
use crate::codec::Frame;
use crate::upstream::process::Process;

/// The next event of a child process. Cancel-safe.
///
/// Whether the leader exited is looked at only when a SIGCHLD came (a `Child::wait` polled
/// beside every read cost about 1,200 instructions per call, callgrind: docs/BENCHMARKS.md
/// "Hot path"); without the signal, `Child::wait` is polled as before. The signal's own wait
/// is polled only once it woke the actor (`crate::quiet`: about 600 instructions per call).
pub(super) async fn next(p: &mut Process) -> Event {
    while p.exited.is_none() {
        if std::mem::take(&mut p.check_exit)
            && let Ok(Some(status)) = p.child.try_wait()
        {
            p.exited = Some((Some(status), tokio::time::Instant::now() + EXIT_DRAIN));
            break;
        }
        match &mut p.sigchld {
            Some(sigchld) => tokio::select! {
                // What the server wrote before it exited is read first.
                biased;
                frame = p.stdout.next() => return stdio_frame(p, frame).await,
                got = std::future::poll_fn(|cx| p.sigchld_gate.poll(cx, |cx| sigchld.poll_recv(cx))) => {
                    if got.is_none() {
                        p.sigchld = None;
                    }
                    p.check_exit = true;
                }
            },
            None => tokio::select! {
                biased;
                frame = p.stdout.next() => return stdio_frame(p, frame).await,
                status = p.child.wait() => {
                    // Answers it wrote just before exiting may still be in the pipe:
                    // they are delivered (briefly) before the transport closes.
                    p.exited = Some((status.ok(), tokio::time::Instant::now() + EXIT_DRAIN));
                }
            },
        }
    }
    let Some((status, deadline)) = p.exited else {
        return Event::Closed(String::new());
    };
    match tokio::time::timeout_at(deadline, p.stdout.next()).await {
        Ok(Some(Ok(Frame::Line(line)))) => Event::Message(line),
        Ok(Some(Ok(Frame::TooLong(len)))) => too_long(p, len),
        _ => {
            p.reap(p.stop_timeouts).await;
            p.exit = Some(p.describe_end(status));
            Event::Closed(with_stderr(p, p.describe_end(status)))
        }
    }
}

/// How long the output of a server that exited is still read.
const EXIT_DRAIN: std::time::Duration = std::time::Duration::from_millis(200);

async fn stdio_frame(p: &mut Process, frame: Option<Result<Frame, std::io::Error>>) -> Event {
    match frame {
        Some(Ok(Frame::Line(line))) => Event::Message(line),
        Some(Ok(Frame::TooLong(len))) => too_long(p, len),
        Some(Err(e)) => Event::Closed(format!("cannot read its stdout: {e}")),
        None => {
            let status = p.stop(p.stop_timeouts).await;
            p.exit = Some(p.describe_end(status));
            Event::Closed(with_stderr(
                p,
                format!("closed its stdout; {}", p.describe_end(status)),
            ))
        }
    }
}

fn too_long(p: &mut Process, len: usize) -> Event {
    let id = p
        .stdout
        .decoder_mut()
        .take_ends()
        .and_then(|ends| answer_id(&ends.head, &ends.tail));
    Event::TooLong(len, id)
}

/// The numeric `id` of a JSON-RPC answer known only by its first and last bytes: a top-level
/// `"id":N` member near the start (`{"jsonrpc":"2.0","id":N,"result":...`, as most SDKs write)
/// or as the last member (`...,"id":N}`, as the TypeScript SDK writes). Ids mcpd sends upstream
/// are integers; anything else is not ours to answer.
pub fn answer_id(head: &[u8], tail: &[u8]) -> Option<u64> {
    head_id(head).or_else(|| tail_id(tail))
}

fn head_id(head: &[u8]) -> Option<u64> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < head.len() && head[i] != b'"' {
                    i += if head[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && &head[start..(i + 1).min(head.len())] == b"\"id\"" {
                    let rest = head.get(i + 1..)?.trim_ascii_start();
                    let value = rest.strip_prefix(b":")?.trim_ascii_start();
                    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
                    let after = value.get(digits).copied();
                    if digits > 0
                        && matches!(after, Some(b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))
                    {
                        return std::str::from_utf8(&value[..digits]).ok()?.parse().ok();
                    }
                    return None;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

fn tail_id(tail: &[u8]) -> Option<u64> {
    let rest = tail.trim_ascii_end().strip_suffix(b"}")?.trim_ascii_end();
    let digits = rest.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (before, number) = rest.split_at(rest.len() - digits);
    let before = before.trim_ascii_end().strip_suffix(b":")?.trim_ascii_end();
    let before = before.strip_suffix(b"\"id\"")?.trim_ascii_end();
    // The member before it ends the value before; a `{` would mean `id` is a nested object's.
    if !before.ends_with(b",") {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

fn with_stderr(p: &Process, what: String) -> String {
    let tail = p.stderr_summary();
    if tail.is_empty() {
        what
    } else {
        format!("{what}; last stderr: {tail}")
    }
}
