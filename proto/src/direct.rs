//! Direct mode (`mcp-shim --direct`, docs/SHIM.md): the shim hands the client's stdin and
//! stdout to the daemon and leaves the data path.
//!
//! After an attach hello with `"direct":true` and a welcome with `"direct":true`, the shim sends
//! one byte, [`HANDOVER_BYTE`], carrying its descriptors 0 and 1 as `SCM_RIGHTS` ancillary
//! data ([`send_stdio`]); the daemon takes them with [`recv_stdio`] and serves the MCP session
//! on them. The socket then carries nothing but, at the end, one [`DirectEnd`] line from the
//! daemon; each side closing it ends the session for the other.
//!
//! When the daemon stops on purpose (SIGTERM, `mcpctl shutdown`, a restart) and the shim said in
//! its hello that it can take them back (`"handback":true`), the daemon sends a [`Handback`]
//! line instead, with the two descriptors attached to it ([`send_with_fds`]); the bytes of the
//! client's input it had read but not handled and the bytes of output the client had not taken
//! yet follow the line, as many as it says. The shim checks the descriptors as the daemon does
//! ([`usable`]) and resumes the session on a new daemon, as a relaying shim does.
//!
//! Only pipes and sockets are handed over ([`handable`]): a terminal or a file keeps the relay.
//! The system calls are here, in the std-only crate, so that the shim, the daemon and the
//! tests share one implementation.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::line::MAX_MESSAGE_LINE;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The one data byte that carries the descriptors (`SCM_RIGHTS` needs at least one).
pub const HANDOVER_BYTE: u8 = b'D';

/// Descriptors the daemon accepts in one handover: stdin and stdout.
const HANDED: usize = 2;
/// Room for more than [`HANDED`] descriptors, so that a peer sending extra ones is noticed (and
/// each of them closed) instead of having them cut off silently.
const ROOM: usize = 8;

/// The daemon's last line on a direct session's socket:
/// `{"op":"end","ok":true,"reason":"the client closed its input"}`. `ok` is false when the
/// session ended for a reason the client did not choose (the daemon shut down, the client
/// stalled); the shim then exits non-zero with `reason` on stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectEnd {
    /// Always `end`.
    pub op: String,
    /// Whether the client ended the session itself.
    #[serde(default)]
    pub ok: bool,
    /// Why the session ended, for a human.
    #[serde(default)]
    pub reason: String,
}

impl DirectEnd {
    /// The end line for `reason`.
    pub fn new(ok: bool, reason: impl Into<String>) -> Self {
        Self {
            op: "end".into(),
            ok,
            reason: reason.into(),
        }
    }
}

/// The daemon's last line on a direct session's socket when it stops on purpose and the shim
/// announced `handback`: `{"op":"handback","session":7,"initialize":{...},"initialized":true,
/// "in_flight":[3,"a"],"input":12,"output":0,"reason":"..."}`, sent with the client's stdin
/// and stdout attached (`SCM_RIGHTS`, in that order). `input` bytes of the client's input
/// follow the line, then `output` bytes for the client's stdout: the rest of a line the daemon
/// had begun to write (the client has its first part) and whole lines after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handback {
    /// Always `handback`.
    pub op: String,
    /// The daemon's session id, for the resume's `previous_session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The `params` of the client's `initialize`, as the client wrote them; absent if it has
    /// not initialized (or its `initialize` failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialize: Option<Box<RawValue>>,
    /// Whether the client sent `notifications/initialized`.
    #[serde(default)]
    pub initialized: bool,
    /// The ids of the client's requests that got no answer (as the client wrote them): the
    /// shim answers each with `-32012`, as after a lost connection.
    #[serde(default)]
    pub in_flight: Vec<Box<RawValue>>,
    /// Bytes of the client's input that follow the line.
    #[serde(default)]
    pub input: u64,
    /// Bytes for the client's stdout that follow the input.
    #[serde(default)]
    pub output: u64,
    /// Why, for logs.
    #[serde(default)]
    pub reason: String,
}

impl Handback {
    /// The `op` of a hand-back line.
    pub const OP: &'static str = "handback";
}

/// The most bytes of input a hand-back carries (or a resumed direct hello announces): a line of
/// the largest size being read, and what came along with it.
pub const MAX_HANDBACK_INPUT: u64 = MAX_MESSAGE_LINE as u64 + 1024 * 1024;
/// The most bytes of output a hand-back carries (what a client that does not read can have
/// queued is bounded by its session's budget, far below this).
pub const MAX_HANDBACK_OUTPUT: u64 = 4 * MAX_MESSAGE_LINE as u64;

/// What a descriptor is, when it cannot be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHandable {
    /// A terminal.
    Terminal,
    /// Another character device (`/dev/null`).
    Device,
    /// A regular file.
    File,
    /// A socket that is not a byte stream (datagrams would cut lines apart).
    NotStream,
    /// A directory, a block device or something else.
    Other,
    /// `fstat` failed (the descriptor is closed).
    Closed,
}

impl fmt::Display for NotHandable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Terminal => "a terminal",
            Self::Device => "a device",
            Self::File => "a regular file",
            Self::NotStream => "a socket that is not a byte stream",
            Self::Other => "neither a pipe nor a socket",
            Self::Closed => "closed",
        })
    }
}

/// Whether `fd` may be handed to the daemon: a pipe (FIFO) or a socket. Anything else (a
/// terminal, a file) is better served by the relay: the daemon could not wait on a file with
/// `epoll`, and a terminal's modes belong to the client.
pub fn handable(fd: BorrowedFd<'_>) -> Result<(), NotHandable> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is a valid borrowed descriptor and `stat` points to writable memory of the
    // size fstat fills in; it is only read after fstat succeeded.
    let stat = unsafe {
        if libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) != 0 {
            return Err(NotHandable::Closed);
        }
        stat.assume_init()
    };
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFIFO => Ok(()),
        libc::S_IFSOCK if socket_type(fd) == Some(libc::SOCK_STREAM) => Ok(()),
        libc::S_IFSOCK => Err(NotHandable::NotStream),
        // SAFETY: isatty only looks at the valid descriptor.
        libc::S_IFCHR if unsafe { libc::isatty(fd.as_raw_fd()) } == 1 => Err(NotHandable::Terminal),
        libc::S_IFCHR => Err(NotHandable::Device),
        libc::S_IFREG => Err(NotHandable::File),
        _ => Err(NotHandable::Other),
    }
}

/// Why a handed descriptor cannot serve as the client's stdin or stdout.
#[derive(Debug)]
pub enum Unusable {
    /// Not a pipe or a stream socket.
    NotHandable(NotHandable),
    /// `fcntl(F_GETFL)` failed.
    Inspect(io::Error),
    /// Not open for `reading` / `writing`.
    NotOpenFor(&'static str),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHandable(what) => {
                write!(f, "is {what}; only pipes and stream sockets are taken")
            }
            Self::Inspect(e) => write!(f, "cannot be inspected: {e}"),
            Self::NotOpenFor(how) => write!(f, "is not open for {how}"),
        }
    }
}

impl std::error::Error for Unusable {}

/// Whether `fd`, received from the other side, can be the client's stdin (`writing` false) or
/// stdout (`writing` true): a pipe or a stream socket ([`handable`]) open that way. The daemon
/// checks what the shim hands over with it, and the shim what the daemon hands back.
pub fn usable(fd: BorrowedFd<'_>, writing: bool) -> Result<(), Unusable> {
    handable(fd).map_err(Unusable::NotHandable)?;
    // SAFETY: F_GETFL only reads the flags of the valid borrowed descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(Unusable::Inspect(io::Error::last_os_error()));
    }
    let mode = flags & libc::O_ACCMODE;
    let wanted = if writing {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    if mode == wanted || mode == libc::O_RDWR {
        Ok(())
    } else {
        Err(Unusable::NotOpenFor(if writing {
            "writing"
        } else {
            "reading"
        }))
    }
}

/// A socket's `SO_TYPE` (`SOCK_STREAM`, `SOCK_DGRAM`, ...).
fn socket_type(fd: BorrowedFd<'_>) -> Option<libc::c_int> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are writable locals of the sizes passed; the descriptor is valid.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(kind)
}

/// Sends [`HANDOVER_BYTE`] with `stdin` and `stdout` attached (`SCM_RIGHTS`), in that order.
pub fn send_stdio(
    stream: &UnixStream,
    stdin: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
) -> io::Result<()> {
    send_fds(stream, &[stdin, stdout])
}

/// Sends [`HANDOVER_BYTE`] with `fds` attached (at most [`ROOM`]).
fn send_fds(stream: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    match send_with_fds(stream.as_fd(), &[HANDOVER_BYTE], fds)? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        _ => Ok(()),
    }
}

/// Sends `data` with `fds` attached (`SCM_RIGHTS`, at most [`ROOM`]) in one `sendmsg` on
/// `socket`; returns how many bytes of `data` went (the descriptors go with the first). A
/// non-blocking socket that is full is an `ErrorKind::WouldBlock` error, nothing sent.
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > ROOM {
        return Err(io::Error::other("too many descriptors"));
    }
    if data.is_empty() {
        return Err(io::Error::other(
            "descriptors need at least one byte to go with",
        ));
    }
    let fds: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut iov = libc::iovec {
        // sendmsg only reads through it.
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut control = Control::new();
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths); every pointer set
    // below points to a live local (`iov`, `control`) for the duration of sendmsg, and the
    // control buffer is aligned for cmsghdr and CMSG_SPACE(size of the fds) long, so
    // CMSG_FIRSTHDR returns a header inside it with room for the descriptors copied there.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let fd_bytes = std::mem::size_of_val(fds.as_slice());
        msg.msg_control = control.bytes.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for the descriptors"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
        loop {
            let n = libc::sendmsg(socket.as_raw_fd(), &msg, SEND_FLAGS);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        }
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// `MSG_NOSIGNAL` where it exists: a daemon gone meanwhile is an `EPIPE`, not a SIGPIPE.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// Received descriptors are close-on-exec from the start, so that no server the daemon starts
/// meanwhile inherits a client's pipe.
#[cfg(any(target_os = "linux", target_os = "android"))]
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;
/// The part of [`RECV_FLAGS`] that makes a read non-blocking.
const DONT_WAIT: libc::c_int = libc::MSG_DONTWAIT;

/// A control buffer aligned for `cmsghdr`, with room for [`ROOM`] descriptors.
#[repr(C)]
struct Control {
    _align: [libc::cmsghdr; 0],
    bytes: [u8; 128],
}

impl Control {
    fn new() -> Self {
        Self {
            _align: [],
            bytes: [0; 128],
        }
    }
}

/// Why [`recv_stdio`] refused what came.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing to read yet (the socket is non-blocking): wait and call again.
    WouldBlock,
    /// The peer closed the connection before sending the descriptors.
    Closed,
    /// A system call failed.
    Io(io::Error),
    /// The peer sent something other than one [`HANDOVER_BYTE`] with two descriptors; whatever
    /// descriptors came were closed.
    Malformed(String),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldBlock => f.write_str("nothing received yet"),
            Self::Closed => f.write_str("the shim closed the connection before the handover"),
            Self::Io(e) => write!(f, "cannot receive the descriptors: {e}"),
            Self::Malformed(why) => write!(f, "a malformed handover: {why}"),
        }
    }
}

impl std::error::Error for RecvError {}

/// What one [`recv_with_fds`] got.
#[derive(Debug)]
pub struct Received {
    /// Bytes read into the buffer (0: the peer closed the connection, if no descriptors came).
    pub len: usize,
    /// Descriptors that came with them, owned (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// More descriptors came than there was room for: the kernel closed the rest.
    pub truncated: bool,
}

/// Reads from `socket` into `buf` with `recvmsg`, taking any descriptors that come along
/// (`SCM_RIGHTS`, close-on-exec). A plain `read` on a socket that may carry descriptors would
/// have the kernel close them unseen. `wait`: block until something comes (else a
/// non-blocking read, `ErrorKind::WouldBlock` when there is nothing).
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8], wait: bool) -> io::Result<Received> {
    let flags = if wait {
        RECV_FLAGS & !DONT_WAIT
    } else {
        RECV_FLAGS
    };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = Control::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: as in `recv_stdio`: `iov` and `control` outlive the call and the lengths passed
    // are theirs; each SCM_RIGHTS payload holds descriptors just installed in this process,
    // owned exactly once.
    let (n, msg_flags) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.bytes.as_mut_ptr().cast();
        msg.msg_controllen = control.bytes.len() as _;
        let n = loop {
            let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, flags);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        take_fds(&msg, &mut fds);
        (n as usize, msg.msg_flags)
    };
    cloexec(&fds);
    Ok(Received {
        len: n,
        fds,
        truncated: msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Owns the descriptors of every `SCM_RIGHTS` header of `msg`.
///
/// # Safety
///
/// `msg` was just filled in by a successful `recvmsg` whose control buffer is still alive.
unsafe fn take_fds(msg: &libc::msghdr, fds: &mut Vec<OwnedFd>) {
    // SAFETY: the caller's promise: the CMSG_* macros walk headers inside the `msg_controllen`
    // bytes the kernel filled in; each SCM_RIGHTS payload is an array of descriptors the kernel
    // just installed in this process, each owned once here (read unaligned: CMSG_DATA need not
    // be aligned for c_int).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
}

/// Where `MSG_CMSG_CLOEXEC` does not exist, received descriptors are made close-on-exec here.
fn cloexec(fds: &[OwnedFd]) {
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    for fd in fds {
        // SAFETY: `fd` is a descriptor this process owns; F_SETFD takes an int flag.
        unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = fds;
}

/// Takes the descriptors of one handover from `socket` (non-blocking): `(stdin, stdout)`. Each
/// received descriptor is owned at once, so that any beyond the two expected, or any that come
/// with the wrong data, are closed rather than leaked.
pub fn recv_stdio(socket: BorrowedFd<'_>) -> Result<(OwnedFd, OwnedFd), RecvError> {
    let mut data = [0u8; 1];
    let received = match recv_with_fds(socket, &mut data, false) {
        Ok(received) => received,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(RecvError::WouldBlock),
        Err(e) => return Err(RecvError::Io(e)),
    };
    let Received {
        len: n,
        mut fds,
        truncated,
    } = received;
    if n == 0 && fds.is_empty() {
        return Err(RecvError::Closed);
    }
    if truncated {
        return Err(RecvError::Malformed(format!(
            "more descriptors than the {ROOM} there is room for"
        )));
    }
    if data[0] != HANDOVER_BYTE || n != 1 {
        return Err(RecvError::Malformed(format!(
            "byte {:#04x} instead of the handover byte",
            data[0]
        )));
    }
    two(fds.pop(), fds.pop(), fds.len()).map_err(RecvError::Malformed)
}

/// `(stdin, stdout)` from the last two descriptors received, if exactly two came; `extra`: how
/// many came before them.
fn two(
    stdout: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    extra: usize,
) -> Result<(OwnedFd, OwnedFd), String> {
    match (stdin, stdout, extra) {
        (Some(stdin), Some(stdout), 0) => Ok((stdin, stdout)),
        (stdin, stdout, extra) => Err(format!(
            "{} descriptors instead of {HANDED} (stdin and stdout)",
            extra + usize::from(stdin.is_some()) + usize::from(stdout.is_some())
        )),
    }
}

/// `(stdin, stdout)` if `fds` are exactly the two a hand-back carries, each usable that way
/// ([`usable`]); otherwise why not (the descriptors are closed).
pub fn handed_back(mut fds: Vec<OwnedFd>) -> Result<(OwnedFd, OwnedFd), String> {
    let (stdin, stdout) = two(fds.pop(), fds.pop(), fds.len())?;
    usable(stdin.as_fd(), false).map_err(|e| format!("stdin {e}"))?;
    usable(stdout.as_fd(), true).map_err(|e| format!("stdout {e}"))?;
    Ok((stdin, stdout))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe just created both; each is owned once.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn stdin_and_stdout_arrive_in_order_and_work() {
        let (shim, daemon) = UnixStream::pair().unwrap();
        let (client_in_r, mut client_in_w) = pipe();
        let (mut client_out_r, client_out_w) = pipe();
        send_stdio(&shim, client_in_r.as_fd(), client_out_w.as_fd()).unwrap();
        drop((client_in_r, client_out_w));
        let (stdin, stdout) = recv_stdio(daemon.as_fd()).unwrap();

        client_in_w.write_all(b"request\n").unwrap();
        let mut got = [0u8; 8];
        File::from(stdin).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"request\n");
        File::from(stdout).write_all(b"answer\n").unwrap();
        let mut answer = String::new();
        client_out_r.read_to_string(&mut answer).unwrap();
        assert_eq!(
            answer, "answer\n",
            "the daemon's copy was the only writer left"
        );
    }

    #[test]
    fn received_descriptors_are_close_on_exec() {
        let (shim, daemon) = UnixStream::pair().unwrap();
        let (r, w) = pipe();
        send_stdio(&shim, r.as_fd(), w.as_fd()).unwrap();
        let (stdin, stdout) = recv_stdio(daemon.as_fd()).unwrap();
        for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
            // SAFETY: F_GETFD on a descriptor this test owns.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn nothing_sent_yet_is_would_block_and_a_closed_peer_is_closed() {
        let (shim, daemon) = UnixStream::pair().unwrap();
        assert!(matches!(
            recv_stdio(daemon.as_fd()),
            Err(RecvError::WouldBlock)
        ));
        drop(shim);
        assert!(matches!(recv_stdio(daemon.as_fd()), Err(RecvError::Closed)));
    }

    #[test]
    fn plain_bytes_or_one_descriptor_or_three_are_malformed() {
        let (mut shim, daemon) = UnixStream::pair().unwrap();
        shim.write_all(b"{").unwrap();
        let err = recv_stdio(daemon.as_fd()).unwrap_err();
        assert!(matches!(err, RecvError::Malformed(_)), "{err}");

        let (r, w) = pipe();
        send_fds(&shim, &[r.as_fd()]).unwrap();
        let err = recv_stdio(daemon.as_fd()).unwrap_err();
        assert!(
            err.to_string().contains("1 descriptors instead of 2"),
            "{err}"
        );
        send_fds(&shim, &[r.as_fd(), w.as_fd(), r.as_fd()]).unwrap();
        let err = recv_stdio(daemon.as_fd()).unwrap_err();
        assert!(err.to_string().contains("3 descriptors"), "{err}");
        drop(w);

        send_stdio(&shim, r.as_fd(), r.as_fd()).unwrap();
        // Two copies of one descriptor are still two descriptors: accepted as sent.
        assert!(recv_stdio(daemon.as_fd()).is_ok());
    }

    #[test]
    fn only_pipes_and_sockets_are_handable() {
        let (r, _w) = pipe();
        assert_eq!(handable(r.as_fd()), Ok(()));
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(handable(a.as_fd()), Ok(()));
        let (d, _e) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert_eq!(handable(d.as_fd()), Err(NotHandable::NotStream));
        let file = tempfile::tempfile().unwrap();
        assert_eq!(handable(file.as_fd()), Err(NotHandable::File));
        let null = File::open("/dev/null").unwrap();
        assert_eq!(handable(null.as_fd()), Err(NotHandable::Device));
    }

    #[test]
    fn a_handback_line_brings_its_descriptors_and_the_bytes_after_it_are_plain() {
        let (daemon, shim) = UnixStream::pair().unwrap();
        let (r, w) = pipe();
        let line = b"{\"op\":\"handback\",\"input\":3}\n";
        let sent = send_with_fds(daemon.as_fd(), line, &[r.as_fd(), w.as_fd()]).unwrap();
        assert_eq!(sent, line.len());
        (&daemon).write_all(b"abc").unwrap();
        let mut got = Vec::new();
        let mut fds = Vec::new();
        while got.len() < line.len() + 3 {
            let mut buf = [0u8; 64];
            let received = recv_with_fds(shim.as_fd(), &mut buf, true).unwrap();
            assert!(!received.truncated);
            got.extend_from_slice(&buf[..received.len]);
            fds.extend(received.fds);
        }
        assert_eq!(&got[..line.len()], line);
        assert_eq!(&got[line.len()..], b"abc");
        let (stdin, stdout) = handed_back(fds).unwrap();
        assert!(usable(stdin.as_fd(), false).is_ok() && usable(stdout.as_fd(), true).is_ok());
    }

    #[test]
    fn a_handback_needs_exactly_two_usable_descriptors_the_right_way_round() {
        let own = |f: &File| f.as_fd().try_clone_to_owned().unwrap();
        let (r, w) = pipe();
        let err = handed_back(vec![own(&r)]).unwrap_err();
        assert_eq!(err, "1 descriptors instead of 2 (stdin and stdout)");
        let err = handed_back(vec![own(&r), own(&w), own(&w)]).unwrap_err();
        assert_eq!(err, "3 descriptors instead of 2 (stdin and stdout)");
        let err = handed_back(vec![]).unwrap_err();
        assert!(err.starts_with("0 descriptors"), "{err}");
        let err = handed_back(vec![own(&w), own(&r)]).unwrap_err();
        assert_eq!(err, "stdin is not open for reading");
        let file = tempfile::tempfile().unwrap();
        let err = handed_back(vec![own(&file), own(&w)]).unwrap_err();
        assert_eq!(
            err,
            "stdin is a regular file; only pipes and stream sockets are taken"
        );
        assert!(handed_back(vec![own(&r), own(&w)]).is_ok());
    }

    #[test]
    fn the_handback_line_keeps_ids_and_params_as_written() {
        let line = r#"{"op":"handback","session":7,"initialize":{"n":1.50},"initialized":true,"in_flight":[123456789012345678901234567890,"a"],"input":0,"output":0,"reason":"r"}"#;
        let back: Handback = serde_json::from_str(line).unwrap();
        assert_eq!(back.op, Handback::OP);
        assert_eq!(
            back.initialize.as_deref().map(RawValue::get),
            Some(r#"{"n":1.50}"#)
        );
        let ids: Vec<&str> = back.in_flight.iter().map(|id| id.get()).collect();
        assert_eq!(ids, ["123456789012345678901234567890", r#""a""#]);
        assert_eq!(serde_json::to_string(&back).unwrap(), line);
    }

    #[test]
    fn the_end_line_round_trips() {
        let end = DirectEnd::new(false, "mcpd is shutting down");
        let line = serde_json::to_string(&end).unwrap();
        assert_eq!(
            line,
            r#"{"op":"end","ok":false,"reason":"mcpd is shutting down"}"#
        );
        assert_eq!(serde_json::from_str::<DirectEnd>(&line).unwrap(), end);
    }
}
