//! Messages with a file descriptor attached (`SCM_RIGHTS`) over a unix seqpacket pair.
//!
//! Hazard: a received descriptor is a new fd in our table the moment `recvmsg` returns;
//! if it is not wrapped at once it leaks (and a message with more than we asked for is
//! truncated, leaking the rest). So [`recv_message`] takes ownership of every fd the
//! kernel delivered, before looking at anything else, and receives with
//! `MSG_CMSG_CLOEXEC` so no exec'd child inherits one by accident. A seqpacket socket
//! keeps message boundaries, so one `sendmsg` is one message: no framing to get wrong.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

/// A connected pair of unix seqpacket sockets, both close-on-exec.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// A unix seqpacket socket listening at `path`, created with mode 0600 (owner only),
/// close-on-exec. An existing *socket* at `path` (a stale one) is replaced; any other
/// file there is an error (EEXIST), never removed.
pub fn seqpacket_listen(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::EEXIST)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let socket = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let address = nix::sys::socket::UnixAddr::new(path)?;
    // The socket file takes its mode from the umask at bind time: 0600 from the start,
    // so no other user can connect in the window before a chmod.
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = nix::sys::socket::bind(socket.as_raw_fd(), &address);
    nix::sys::stat::umask(previous);
    bound?;
    nix::sys::socket::listen(&socket, nix::sys::socket::Backlog::new(16)?)?;
    Ok(socket)
}

/// Accepts one connection on a [`seqpacket_listen`] socket (close-on-exec).
pub fn seqpacket_accept(listener: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    loop {
        match nix::sys::socket::accept4(listener, SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => return Ok(fd),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Connects to the seqpacket socket listening at `path` (close-on-exec).
pub fn seqpacket_connect(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    let socket = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let address = nix::sys::socket::UnixAddr::new(path)?;
    nix::sys::socket::connect(socket.as_raw_fd(), &address)?;
    Ok(socket)
}

/// Sets how long a receive on `socket` may block (`None`: forever).
pub fn set_receive_timeout(
    socket: BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let timeout = timeout.unwrap_or_default();
    let value = nix::sys::time::TimeVal::from(libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    });
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &value)?;
    Ok(())
}

/// Most fds one message carries (a command's stdin, stdout and stderr, and one spare).
pub const MAX_FDS: usize = 4;

/// Sends one message, with `fd` attached when given.
pub fn send_message(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    send_message_with_fds(socket, bytes, fd.as_slice())
}

/// Sends one message with every fd in `fds` attached (at most [`MAX_FDS`]).
pub fn send_message_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
    }
    let iov = [IoSlice::new(bytes)];
    let raw: Vec<std::os::fd::RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> =
        if raw.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(&raw)] };
    let sent = nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != bytes.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "short seqpacket send"));
    }
    Ok(())
}

/// One received message: its bytes and the fds that came with it, in order.
#[derive(Debug)]
pub struct Received {
    /// The message bytes.
    pub bytes: Vec<u8>,
    /// Every fd attached, owned (close-on-exec).
    pub fds: Vec<OwnedFd>,
}

impl Received {
    /// The first fd attached, if any (the others are closed).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        if self.fds.is_empty() { None } else { Some(self.fds.swap_remove(0)) }
    }
}

/// Receives one message of at most `max` bytes; `None` at end of stream (the peer and
/// every copy of its end are closed). A message longer than `max` is an error.
pub fn recv_message(socket: BorrowedFd<'_>, max: usize) -> std::io::Result<Option<Received>> {
    let mut buffer = vec![0u8; max];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let (length, flags, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        match nix::sys::socket::recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                let mut fds = Vec::new();
                for cmsg in message.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: the kernel just installed these fds in our table for us;
                        // nobody else owns them.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                break (message.bytes, message.flags, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    };
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message truncated"));
    }
    if length == 0 && fds.is_empty() {
        return Ok(None);
    }
    buffer.truncate(length);
    Ok(Some(Received { bytes: buffer, fds }))
}

static TAKEN: std::sync::Mutex<Vec<std::os::fd::RawFd>> = std::sync::Mutex::new(Vec::new());

/// Takes ownership of an fd our spawner placed at `fd` (e.g. the setup channel at 3),
/// marking it close-on-exec. Each number is handed out at most once per process, so two
/// owners of one fd cannot arise through this function.
pub fn take_inherited(fd: std::os::fd::RawFd) -> std::io::Result<OwnedFd> {
    let mut taken = TAKEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if fd < 0 || taken.contains(&fd) {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "fd already taken"));
    }
    // SAFETY: fcntl on an integer fd has no memory-safety preconditions; EBADF if closed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; sets FD_CLOEXEC on an open fd.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    taken.push(fd);
    // SAFETY: the fd is open (checked above) and was inherited for us to own; this
    // function hands out each number once, so no other OwnedFd wraps it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_message_carries_an_fd_across() {
        let (left, right) = seqpacket_pair().expect("pair");
        let (mut reader, mut writer) = std::os::unix::net::UnixStream::pair().expect("stream pair");
        send_message(left.as_fd(), b"hello", Some(writer.as_fd())).expect("send");
        let received = recv_message(right.as_fd(), 64).expect("recv").expect("a message");
        assert_eq!(received.bytes, b"hello");
        let mut received = received;
        let passed = received.take_fd().expect("fd attached");
        // The received fd is the same socket: bytes written to it arrive at `reader`.
        let mut passed = std::os::unix::net::UnixStream::from(passed);
        passed.write_all(b"x").expect("write");
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).expect("read");
        assert_eq!(&byte, b"x");
        writer.write_all(b"y").expect("original still works");
        drop(left);
        assert!(
            recv_message(right.as_fd(), 64).expect("recv").is_none(),
            "EOF after the peer closed"
        );
    }

    #[test]
    fn three_fds_arrive_in_order() {
        let (left, right) = seqpacket_pair().expect("pair");
        let pipes: Vec<(OwnedFd, OwnedFd)> =
            (0..3).map(|_| nix::unistd::pipe().expect("pipe")).collect();
        let writers: Vec<BorrowedFd<'_>> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
        send_message_with_fds(left.as_fd(), b"three", &writers).expect("send");
        let received = recv_message(right.as_fd(), 64).expect("recv").expect("a message");
        assert_eq!(received.fds.len(), 3);
        for (index, (fd, (reader, _))) in received.fds.into_iter().zip(&pipes).enumerate() {
            let mut file = std::fs::File::from(fd);
            file.write_all(&[index as u8]).expect("write");
            let mut byte = [0u8; 1];
            std::fs::File::from(reader.try_clone().expect("dup"))
                .read_exact(&mut byte)
                .expect("read");
            assert_eq!(byte[0], index as u8, "fd {index} arrived in its place");
        }
        let too_many: Vec<BorrowedFd<'_>> = (0..MAX_FDS + 1).map(|_| left.as_fd()).collect();
        let err = send_message_with_fds(left.as_fd(), b"x", &too_many).expect_err("too many");
        assert_eq!(err.raw_os_error(), Some(libc::E2BIG));
    }

    #[test]
    fn an_oversized_message_is_an_error_not_a_silent_cut() {
        let (left, right) = seqpacket_pair().expect("pair");
        send_message(left.as_fd(), &[7u8; 100], None).expect("send");
        let err = recv_message(right.as_fd(), 10).expect_err("truncated");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_listening_socket_is_owner_only_and_replaces_only_a_stale_socket() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bottle-fdpass-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("exec.sock");
        let listener = seqpacket_listen(&path).expect("listen");
        let mode = std::fs::metadata(&path).expect("socket file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let client = seqpacket_connect(&path).expect("connect");
        let server = seqpacket_accept(listener.as_fd()).expect("accept");
        send_message(client.as_fd(), b"ping", None).expect("send");
        let got = recv_message(server.as_fd(), 16).expect("recv").expect("message");
        assert_eq!(got.bytes, b"ping");
        drop(listener);
        // The stale socket file is replaced by a new listener.
        let _again = seqpacket_listen(&path).expect("listen over a stale socket");
        let plain = dir.join("plain");
        std::fs::write(&plain, b"keep").expect("file");
        let err = seqpacket_listen(&plain).expect_err("not a socket");
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read(&plain).expect("kept"), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_inherited_fd_is_taken_once() {
        let (left, _right) = seqpacket_pair().expect("pair");
        let raw = left.as_raw_fd();
        std::mem::forget(left);
        let taken = take_inherited(raw).expect("first take");
        assert_eq!(
            take_inherited(raw).expect_err("second take").kind(),
            std::io::ErrorKind::AlreadyExists
        );
        drop(taken);
    }
}
