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

/// Sends one message, with `fd` attached when given.
pub fn send_message(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let raw = fd.map(|fd| [fd.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> =
        raw.as_ref().map(|r| ControlMessage::ScmRights(r)).into_iter().collect();
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

/// One received message: its bytes and the fd that came with it, if any.
#[derive(Debug)]
pub struct Received {
    /// The message bytes.
    pub bytes: Vec<u8>,
    /// The first fd attached (any further ones are closed).
    pub fd: Option<OwnedFd>,
}

/// Receives one message of at most `max` bytes; `None` at end of stream (the peer and
/// every copy of its end are closed). A message longer than `max` is an error.
pub fn recv_message(socket: BorrowedFd<'_>, max: usize) -> std::io::Result<Option<Received>> {
    let mut buffer = vec![0u8; max];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
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
    Ok(Some(Received { bytes: buffer, fd: fds.into_iter().next() }))
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
        let passed = received.fd.expect("fd attached");
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
    fn an_oversized_message_is_an_error_not_a_silent_cut() {
        let (left, right) = seqpacket_pair().expect("pair");
        send_message(left.as_fd(), &[7u8; 100], None).expect("send");
        let err = recv_message(right.as_fd(), 10).expect_err("truncated");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
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
