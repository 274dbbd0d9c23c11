//! Copying lines between stdio and the daemon, and resuming the session when the daemon restarts.
//!
//! A thread copies stdin to the socket; the main thread copies the socket to stdout. Each read
//! takes whatever is there (up to 64 KiB) and writes the whole lines in it at once, unbuffered:
//! MCP clients wait for each line, so nothing may sit in a buffer waiting for more. Lines are
//! looked at (see [`crate::track`]) but forwarded as the original bytes.
//!
//! When the connection drops while the client is still there, the main thread answers the
//! client's requests that were in flight with an error, reconnects with backoff and attaches
//! again with a `resume` made of the client's `initialize`; lines the client sends meanwhile are
//! held and go to the new connection, in order, after its welcome.
//!
//! "The socket" above is the daemon's connection, or, when the daemon took them, the pair of
//! pipes the shim handed it at the attach ([`crate::pipes`]): the same bytes go the same way,
//! at a lower cost per message for the daemon. The socket then stays open and idle beside them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mcpd_proto::direct::DirectEnd;
use mcpd_proto::envelope::{INVALID_REQUEST, UPSTREAM_LOST, UPSTREAM_UNAVAILABLE};
use mcpd_proto::line::{Line, MAX_CONTROL_LINE, MAX_MESSAGE_LINE};

use crate::Exit;
use crate::pipes::Pipes;
use crate::session::{self, Attached, Failure, HANDSHAKE_TIMEOUT};
use crate::track::{self, First, FromClient, Key, Session, Splitter};

/// Size of one read. At glibc's mmap threshold (128 KiB), so each of the two read buffers is
/// a fresh mapping whose pages become resident only as data lands in them; a smaller one came
/// from the heap and was zero-filled there: 128 KiB of the shim's resident memory spent on
/// zeros (docs/BENCHMARKS.md, "Shim memory").
const CHUNK: usize = 128 * 1024;

/// After stdin closes, how long the daemon may take to finish answering and close its side.
const LINGER: Duration = Duration::from_secs(2);

/// After the pipe from the daemon ended, how long its socket may take to say why it refused
/// the pipes (it says so at once, or closes).
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// After the session is cut, how long stdout may take to take the last chunk before we leave.
const LAST_WRITE: Duration = Duration::from_secs(1);

/// First wait between reconnection attempts; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// Longest wait between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Bytes of client lines held while reconnecting (one message of the largest size fits).
const HELD_MAX_BYTES: usize = MAX_MESSAGE_LINE + 1;
/// Client lines held while reconnecting.
const HELD_MAX_LINES: usize = 1024;

/// The answer to a request that was in flight when the connection dropped.
pub const LOST_MESSAGE: &str = "mcpd restarted while this request was in flight; try again";
/// The answer to a request sent while reconnecting, when the held lines are already too many.
const HELD_FULL_MESSAGE: &str =
    "mcpd is restarting and mcp-shim holds too many messages already; try again";

/// Where the relay reconnects to, and for how long it tries.
#[derive(Debug, Clone)]
pub struct Target {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The profile attached to.
    pub profile: String,
    /// How long to keep trying after the connection drops; zero: do not reconnect.
    pub reconnect_timeout: Duration,
    /// Start the daemon again when it went away (see [`crate::revive`]).
    pub autostart: bool,
    /// Offer the daemon a pair of pipes for the session's data ([`crate::pipes`]).
    pub pipes: bool,
}

/// Relays until the session ends and says how the shim should exit.
pub fn run(attached: Attached, target: &Target) -> Exit {
    run_resumed(attached, target, Session::default(), Vec::new())
}

/// [`run`] for a session that began elsewhere (a direct session the daemon handed back, see
/// [`crate::handback`]): `session` is what is known of it, and `input` are client bytes read
/// before (handed back by the daemon), which go first: whole lines to the daemon, a partial
/// line joined with what follows on stdin.
pub fn run_resumed(attached: Attached, target: &Target, session: Session, input: Vec<u8>) -> Exit {
    let (stdin, stdout) = match (dup(io::stdin().as_fd()), dup(io::stdout().as_fd())) {
        (Ok(stdin), Ok(stdout)) => (stdin, stdout),
        (Err(e), _) | (_, Err(e)) => {
            return Exit::fail(format!("stdin or stdout is unusable: {e}"));
        }
    };
    let conn = match Conn::new(attached) {
        Ok(conn) => conn,
        Err(e) => return Exit::fail(format!("cannot start the stdin relay: {e}")),
    };
    let mut session = session;
    session.daemon_session = conn.session;
    // Turned off for this shim's next attaches when a daemon refuses the pipes.
    let mut target = target.clone();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            link: Link::Connected,
            generation: 0,
            writer: Some(Arc::clone(&conn.to_daemon)),
            session,
            held: Vec::new(),
            held_ids: Vec::new(),
            held_lines: 0,
            stdin_closed: false,
        }),
        changed: Condvar::new(),
        stdout: Mutex::new(stdout),
        in_flight: AtomicUsize::new(0),
    });
    // Allocated here, not in the thread: a first allocation there would create a second malloc
    // arena (64 MiB of address space, some resident pages) for nothing.
    let stdin_buf = vec![0u8; CHUNK];
    let for_stdin = Arc::clone(&shared);
    let pump = std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(128 * 1024)
        .spawn(move || copy_stdin(&for_stdin, stdin, stdin_buf, &input));
    if let Err(e) = pump {
        return Exit::fail(format!("cannot start the stdin relay: {e}"));
    }

    let mut buf = vec![0u8; CHUNK];
    let mut lines = Splitter::new(MAX_MESSAGE_LINE);
    let mut conn = conn;
    loop {
        let ended = match copy_daemon(&shared, &conn, &mut lines, &mut buf) {
            Ok(ended) => ended,
            Err(exit) => return exit,
        };
        if let Some(why) = conn.to_daemon.refusal() {
            crate::pipes::debug(format_args!("relaying over the socket from now on: {why}"));
            target.pipes = false;
        }
        // The connection is over: its socket (and its pipe from the daemon) close now, not
        // when the next one replaces it.
        drop(conn);
        if shared.lock().stdin_closed {
            // The daemon answered what it could after our end of input and closed (its grace
            // and our linger are both 2 s, so it may close first): what is still unanswered
            // gets an error now, before the shim exits, never silence.
            if let Err(e) = shared.lose() {
                return stdout_failed(e);
            }
            return Exit::done();
        }
        lines.reset();
        if let Err(e) = shared.lose() {
            return stdout_failed(e);
        }
        if target.reconnect_timeout.is_zero() {
            return match ended {
                None => {
                    Exit::fail("the daemon closed the session (is mcpd stopping or restarting?)")
                }
                Some(e) => Exit::fail(format!("lost the connection to the daemon: {e}")),
            };
        }
        conn = match reconnect(&shared, &target) {
            Ok(conn) => conn,
            Err(exit) => return exit,
        };
    }
}

/// What both threads share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when `state.link` or `state.stdin_closed` changes.
    changed: Condvar,
    /// Whole lines only, so that the two threads never interleave inside a line.
    stdout: Mutex<File>,
    /// `state.session.in_flight()`, readable without the lock: while it is zero the daemon's
    /// lines need not be parsed.
    in_flight: AtomicUsize,
}

/// The state of the connection and of the session, changed only briefly under the lock: no
/// I/O is done while it is held.
#[derive(Debug)]
struct State {
    link: Link,
    /// Bumped each time a connection is lost.
    generation: u64,
    /// The current connection, for the stdin thread to write to; `None` while reconnecting.
    writer: Option<Arc<ToDaemon>>,
    session: Session,
    /// Client lines waiting for the next connection, and the requests among them.
    held: Vec<u8>,
    held_ids: Vec<Key>,
    held_lines: usize,
    stdin_closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Client lines go straight to the daemon.
    Connected,
    /// No connection (or the new one still gets the held lines): client lines are held.
    Holding,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stdout(&self) -> MutexGuard<'_, File> {
        self.stdout.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: &State) {
        self.in_flight
            .store(state.session.in_flight(), Ordering::SeqCst);
    }

    /// The connection is gone: hold client lines from now on, and answer every request that
    /// was in flight with an error.
    fn lose(&self) -> io::Result<()> {
        let lost = {
            let mut state = self.lock();
            state.link = Link::Holding;
            state.generation += 1;
            state.writer = None;
            let lost = state.session.lost();
            self.publish(&state);
            lost
        };
        if lost.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(lost.len() * 128);
        for id in &lost {
            track::error_line(&mut out, id, UPSTREAM_LOST, LOST_MESSAGE);
        }
        write_all(&mut *self.stdout(), &out)
    }
}

/// A welcomed connection as the relay uses it.
#[derive(Debug)]
struct Conn {
    /// Read by the main thread.
    from_daemon: FromDaemon,
    /// Bytes the daemon sent after its welcome, read along with it.
    early: Vec<u8>,
    /// The session id the daemon gave.
    session: Option<u64>,
    /// Written by the stdin thread (and by the thread that writes held lines).
    to_daemon: Arc<ToDaemon>,
}

impl Conn {
    fn new(attached: Attached) -> io::Result<Self> {
        let Attached {
            stream,
            early,
            session,
            pipes,
            ..
        } = attached;
        let (from_daemon, to_daemon) = match pipes {
            Some(Pipes {
                to_daemon,
                from_daemon,
            }) => (
                FromDaemon::Pipe(from_daemon),
                ToDaemon::Pipe {
                    pipe: to_daemon,
                    socket: stream,
                },
            ),
            None => {
                let writer = stream.try_clone()?;
                (FromDaemon::Socket(stream), ToDaemon::Socket(writer))
            }
        };
        Ok(Self {
            from_daemon,
            early,
            session,
            to_daemon: Arc::new(to_daemon),
        })
    }
}

/// Where the daemon's lines come from.
#[derive(Debug)]
enum FromDaemon {
    Socket(UnixStream),
    Pipe(File),
}

impl FromDaemon {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Socket(socket) => (&*socket).read(buf),
            Self::Pipe(pipe) => (&*pipe).read(buf),
        }
    }
}

/// Where client lines go: the socket, or the pipe to the daemon (then the socket is kept only
/// so that the daemon sees it close when the shim goes).
#[derive(Debug)]
enum ToDaemon {
    Socket(UnixStream),
    Pipe { pipe: File, socket: UnixStream },
}

impl ToDaemon {
    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Socket(socket) => write_all(&mut &*socket, data),
            Self::Pipe { pipe, .. } => write_all(&mut &*pipe, data),
        }
    }

    /// The client's end of input, passed on: the daemon answers what it can and closes.
    fn end_input(&self) {
        match self {
            Self::Socket(socket) => {
                let _ = socket.shutdown(Shutdown::Write);
            }
            Self::Pipe { pipe, .. } => crate::pipes::end_input(pipe),
        }
    }

    /// Why the daemon refused the pipes, when it did: it says so in one line on the socket
    /// before closing it (`{"op":"end","ok":false,"reason":"..."}`), right after closing the
    /// pipes. Read once the pipe from the daemon has ended; a daemon that ended the session
    /// or died closes the socket at the same time, without a line.
    fn refusal(&self) -> Option<String> {
        let Self::Pipe { socket, .. } = self else {
            return None;
        };
        socket.set_read_timeout(Some(REFUSAL_WAIT)).ok()?;
        let mut reader = io::BufReader::new(socket);
        match mcpd_proto::line::read_line_bounded(&mut reader, MAX_CONTROL_LINE) {
            Ok(Some(Line::Complete(line))) => serde_json::from_slice::<DirectEnd>(&line)
                .ok()
                .filter(|end| end.op == "end")
                .map(|end| end.reason),
            _ => None,
        }
    }

    /// Ends the session from our side.
    fn cut(&self) {
        match self {
            Self::Socket(socket) => {
                let _ = socket.shutdown(Shutdown::Both);
            }
            Self::Pipe { pipe, socket } => {
                crate::pipes::end_input(pipe);
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies the daemon's lines to stdout until the connection ends; `Ok(Some(e))` if it ended in
/// an error, `Err` if the shim should exit.
fn copy_daemon(
    shared: &Shared,
    conn: &Conn,
    lines: &mut Splitter,
    buf: &mut [u8],
) -> Result<Option<io::Error>, Exit> {
    forward_to_client(shared, lines, &conn.early).map_err(stdout_failed)?;
    let from_daemon = &conn.from_daemon;
    loop {
        match from_daemon.read(buf) {
            Ok(0) => return Ok(None),
            Ok(n) => forward_to_client(shared, lines, &buf[..n]).map_err(stdout_failed)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Ok(Some(e)),
        }
    }
}

/// Writes the whole lines of `chunk` to stdout, noting the responses among them.
fn forward_to_client(shared: &Shared, lines: &mut Splitter, chunk: &[u8]) -> io::Result<()> {
    let fed = lines.feed(chunk);
    if shared.in_flight.load(Ordering::SeqCst) > 0 {
        let mut state = None;
        for line in fed.lines() {
            if let Some((id, error)) = track::response_from_daemon(line) {
                let state = state.get_or_insert_with(|| shared.lock());
                state.session.answered(&id, error);
                shared.publish(state);
            }
        }
    }
    let mut out = shared.stdout();
    match fed.first {
        Some(First::Line(line)) => write_all(&mut *out, line)?,
        Some(First::TooLong(len)) => {
            eprintln!(
                "mcp-shim: dropped a {len}-byte message from the daemon: over the limit of \
                 {MAX_MESSAGE_LINE} bytes"
            );
        }
        None => {}
    }
    write_all(&mut *out, fed.body)
}

/// Attaches again, with backoff, until the daemon answers or the reconnect timeout passes.
fn reconnect(shared: &Arc<Shared>, target: &Target) -> Result<Conn, Exit> {
    // A timeout too large for the clock is as good as none: a day is plenty then.
    let now = Instant::now();
    let deadline = now
        .checked_add(target.reconnect_timeout)
        .unwrap_or(now + Duration::from_secs(24 * 3600));
    let mut delay = BACKOFF_FIRST;
    let mut revive = crate::revive::Reviver::new(target.autostart);
    loop {
        let (resume, stdin_closed) = {
            let state = shared.lock();
            (state.session.resume(), state.stdin_closed)
        };
        if stdin_closed {
            return Err(Exit::done());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let req = session::Request {
            socket: &target.socket,
            profile: &target.profile,
            timeout: HANDSHAKE_TIMEOUT.min(left).max(Duration::from_millis(100)),
            again: true,
            direct: false,
            direct_input: 0,
            pipes: target.pipes,
        };
        let why = match session::attach(req, resume).map(Conn::new) {
            Ok(Ok(conn)) => {
                resumed(shared, &conn);
                return Ok(conn);
            }
            Ok(Err(e)) => Exit::fail(format!("cannot relay on the new connection: {e}")),
            Err(Failure::Refused(exit)) => return Err(exit),
            Err(Failure::Unreachable(why)) => why,
        };
        if revive.maybe_start(&target.socket) {
            delay = BACKOFF_FIRST;
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(gave_up(target, &why));
        }
        // Sleep, but wake at once if the client goes away meanwhile.
        let wait = delay.min(left);
        let until = Instant::now() + wait;
        let mut state = shared.lock();
        while !state.stdin_closed {
            let now = Instant::now();
            if now >= until {
                break;
            }
            state = shared
                .changed
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// A new connection was welcomed: the held lines go to it first, then client lines flow again.
fn resumed(shared: &Arc<Shared>, conn: &Conn) {
    let generation = {
        let mut state = shared.lock();
        state.session.daemon_session = conn.session;
        state.writer = Some(Arc::clone(&conn.to_daemon));
        if state.held.is_empty() {
            state.link = Link::Connected;
            shared.changed.notify_all();
            return;
        }
        state.generation
    };
    // The held lines are written by a thread of their own, so that this one goes on reading
    // the daemon's answers: writing much while reading nothing could deadlock with a daemon
    // that waits for us to read.
    let to_daemon = Arc::clone(&conn.to_daemon);
    let for_thread = Arc::clone(shared);
    let flusher = std::thread::Builder::new()
        .name("held".into())
        .stack_size(64 * 1024)
        .spawn(move || flush_held(&for_thread, &to_daemon, generation));
    if flusher.is_err() {
        // No thread: flush from here, which is fine for the usual handful of lines.
        flush_held(shared, &conn.to_daemon, generation);
    }
}

/// Writes the held lines to the connection of `generation`, then lets client lines flow.
fn flush_held(shared: &Shared, to_daemon: &ToDaemon, generation: u64) {
    let mut batch = Vec::new();
    loop {
        {
            let mut state = shared.lock();
            if state.generation != generation {
                // Lost again meanwhile; what is still held waits for the next connection.
                return;
            }
            if state.held.is_empty() {
                state.link = Link::Connected;
                shared.changed.notify_all();
                return;
            }
            batch.clear();
            std::mem::swap(&mut batch, &mut state.held);
            state.held_lines = 0;
            let ids = std::mem::take(&mut state.held_ids);
            state.session.sent(ids);
            shared.publish(&state);
        }
        if to_daemon.write_all(&batch).is_err() {
            // The main thread sees the connection end and answers what was in flight.
            return;
        }
    }
}

/// Copies stdin to the daemon line by line. When stdin closes, tells the daemon (shutdown of
/// our write side) and gives it [`LINGER`] to finish; then cuts the session so that the main
/// thread sees its end.
fn copy_stdin(shared: &Shared, mut stdin: File, mut buf: Vec<u8>, input: &[u8]) {
    let mut relay = StdinRelay {
        shared,
        lines: Splitter::new(MAX_MESSAGE_LINE),
        what: Vec::new(),
        writer: None,
        replies: Vec::new(),
    };
    if !input.is_empty() {
        relay.chunk(input);
    }
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => relay.chunk(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(stdin.as_fd(), libc::POLLIN)
            }
            // An unreadable stdin is a closed one.
            Err(_) => break,
        }
    }
    relay.last_line();
    let writer = {
        let mut state = shared.lock();
        state.stdin_closed = true;
        shared.changed.notify_all();
        // Let held lines reach a new connection before its write side is shut down.
        let until = Instant::now() + LINGER;
        while state.link == Link::Holding && state.writer.is_some() && Instant::now() < until {
            state = shared
                .changed
                .wait_timeout(state, until.saturating_duration_since(Instant::now()))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.writer.clone()
    };
    if let Some(writer) = writer {
        writer.end_input();
    }
    // The client may still read the answers to what it asked (`printf ... | mcp-shim`): the
    // daemon answers what it can within the same linger and then closes, which ends the main
    // thread and the shim.
    std::thread::sleep(LINGER);
    // The daemon kept its side open. What is still unanswered gets an error, so that no request
    // is left without an answer; shutting our side wakes the main thread's read with an end of
    // file, so a chunk it is writing to stdout still goes out whole.
    let _ = shared.lose();
    cut(shared, 0);
}

/// The stdin thread's buffers.
struct StdinRelay<'a> {
    shared: &'a Shared,
    lines: Splitter,
    /// What each line of the current chunk means, reused from chunk to chunk.
    what: Vec<FromClient>,
    /// The connection this thread writes to, and its generation.
    writer: Option<(u64, Arc<ToDaemon>)>,
    /// Answers the shim itself gives the client.
    replies: Vec<u8>,
}

impl StdinRelay<'_> {
    fn chunk(&mut self, chunk: &[u8]) {
        let fed = self.lines.feed(chunk);
        if let Some(First::TooLong(len)) = fed.first {
            // As the daemon would: it never sees the line.
            let message = format!(
                "message of {len} bytes dropped: over the limit of {MAX_MESSAGE_LINE} bytes"
            );
            self.replies.extend_from_slice(
                mcpd_proto::envelope::error_response(None, INVALID_REQUEST, &message).as_bytes(),
            );
            self.replies.push(b'\n');
        }
        let first = match fed.first {
            Some(First::Line(line)) => line,
            _ => &[],
        };
        send(
            self.shared,
            &mut self.what,
            &mut self.writer,
            &mut self.replies,
            [first, fed.body],
        );
        self.answer();
    }

    /// A last line without a newline, at the end of stdin.
    fn last_line(&mut self) {
        if let Some(First::Line(line)) = self.lines.finish() {
            send(
                self.shared,
                &mut self.what,
                &mut self.writer,
                &mut self.replies,
                [line, &[]],
            );
        }
        self.answer();
    }

    fn answer(&mut self) {
        if !self.replies.is_empty() {
            let _ = write_all(&mut *self.shared.stdout(), &self.replies);
            self.replies.clear();
        }
    }
}

/// Sends `parts` (whole lines) to the daemon, or holds them while there is no connection.
fn send(
    shared: &Shared,
    what: &mut Vec<FromClient>,
    writer: &mut Option<(u64, Arc<ToDaemon>)>,
    replies: &mut Vec<u8>,
    parts: [&[u8]; 2],
) {
    if parts.iter().all(|p| p.is_empty()) {
        return;
    }
    // Parsed before the lock is taken: the main thread may be waiting for it.
    what.clear();
    let each_line = || parts.into_iter().flat_map(crate::scan::lines);
    what.extend(each_line().map(track::from_client));

    let mut state = shared.lock();
    if state.link == Link::Connected {
        for w in what.drain(..) {
            state.session.on_client(w, None);
        }
        shared.publish(&state);
        let generation = state.generation;
        if writer.as_ref().is_none_or(|(g, _)| *g != generation) {
            *writer = state.writer.clone().map(|w| (generation, w));
        }
        drop(state);
        if let Some((_, to_daemon)) = writer.as_ref() {
            for part in parts {
                if to_daemon.write_all(part).is_err() {
                    // The daemon went away: the main thread sees the same, answers the
                    // requests that were in flight (these included) and reconnects.
                    *writer = None;
                    break;
                }
            }
        }
        return;
    }
    let state = &mut *state;
    for (line, w) in each_line().zip(what.drain(..)) {
        let fits =
            state.held.len() + line.len() <= HELD_MAX_BYTES && state.held_lines < HELD_MAX_LINES;
        if fits {
            state.held.extend_from_slice(line);
            state.held_lines += 1;
            state.session.on_client(w, Some(&mut state.held_ids));
        } else if let FromClient::Request(id) | FromClient::Initialize(id, _) = &w {
            track::error_line(replies, id, UPSTREAM_UNAVAILABLE, HELD_FULL_MESSAGE);
        } else {
            // A notification or an answer to the daemon: nobody would get its error.
            state.session.on_client(w, None);
        }
    }
}

/// Ends the session from our side, which lets the main thread finish and choose the exit code;
/// if it is stuck writing to a stdout nobody reads, leaves anyway with `code`.
fn cut(shared: &Shared, code: i32) {
    let writer = shared.lock().writer.clone();
    if let Some(writer) = writer {
        writer.cut();
    }
    std::thread::sleep(LAST_WRITE);
    // SAFETY: `_exit` has no preconditions; nothing is left to flush (stdout is unbuffered).
    unsafe { libc::_exit(code) }
}

/// Writes all of `data`, waiting instead of failing if the descriptor is non-blocking (a client
/// may hand us a pipe with O_NONBLOCK set on its shared file description).
pub fn write_all<W: Write + AsFd>(out: &mut W, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match out.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(out.as_fd(), libc::POLLOUT),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Blocks until `fd` is ready for `events` (or has hung up, which the next call reports).
fn wait_for(fd: BorrowedFd<'_>, events: libc::c_short) {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `pollfd` is a valid, initialised array of one element for the duration of the call.
    unsafe {
        libc::poll(&mut pollfd, 1, -1);
    }
}

/// The end of a reconnect that ran out of time: `why` is the last attempt's failure.
pub fn gave_up(target: &Target, why: &Exit) -> Exit {
    Exit::fail(format!(
        "lost the connection to mcpd and it did not come back within {} s; giving up \
         (last attempt: {})",
        target.reconnect_timeout.as_secs_f64(),
        why.message.as_deref().unwrap_or("no answer")
    ))
}

/// The client stopped reading our stdout: that is the client hanging up, a normal end. (Rust's
/// runtime ignores SIGPIPE, so a closed stdout shows up here as EPIPE rather than killing us.)
pub fn stdout_failed(e: io::Error) -> Exit {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Exit::done()
    } else {
        Exit::fail(format!("cannot write to stdout: {e}"))
    }
}

/// An unbuffered handle on a standard stream (std's stdout buffers by line, stdin by 8 KiB).
fn dup(fd: BorrowedFd<'_>) -> io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}
