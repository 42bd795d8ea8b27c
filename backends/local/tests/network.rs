//! Network confinement: only loopback inside; the egress listener is the one way out.
mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bottle_proc::ExitStatus;

#[tokio::test]
async fn agent_sees_only_loopback() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("lo");
    let finished = common::run(&reaper, &common::shell("cat /proc/net/dev", &workspace)).await;
    assert_eq!(finished.status, ExitStatus::Exited(0), "{finished:?}");
    let interfaces: Vec<&str> = finished
        .stdout
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{}", finished.stdout);
}

#[tokio::test]
async fn tcp_server_on_host_loopback_is_unreachable() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("tcp");
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("host server");
    server.set_nonblocking(true).expect("nonblocking");
    let port = server.local_addr().expect("addr").port();
    let script = format!(
        "import socket\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\nexcept OSError as e:\n    print('errno', e.errno)\n"
    );
    let finished = common::run(&reaper, &common::python(&script, &workspace)).await;
    assert_eq!(finished.stdout.trim(), format!("errno {}", libc::ECONNREFUSED), "{finished:?}");
    let accepted = server.accept();
    assert_eq!(
        accepted.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::WouldBlock),
        "the host server saw a connection"
    );
}

#[tokio::test]
async fn udp_query_to_host_loopback_never_arrives() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("udp");
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").expect("host dns server");
    dns.set_nonblocking(true).expect("nonblocking");
    let port = dns.local_addr().expect("addr").port();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'\\x12\\x34query', ('127.0.0.1', {port}))\nprint('sent')\n"
    );
    let finished = common::run(&reaper, &common::python(&script, &workspace)).await;
    assert_eq!(finished.stdout.trim(), "sent", "{finished:?}");
    let mut buffer = [0u8; 64];
    assert_eq!(dns.recv(&mut buffer).err().map(|e| e.kind()), Some(std::io::ErrorKind::WouldBlock));

    // Control: the same datagram from the host does arrive, so the check above can fail.
    let control = std::net::UdpSocket::bind("127.0.0.1:0").expect("control");
    control.send_to(b"\x12\x34query", ("127.0.0.1", port)).expect("send");
    assert!(common::wait_until(Duration::from_secs(5), || dns.recv(&mut buffer).is_ok()).await);
}

#[tokio::test]
async fn egress_listener_accepts_the_agent_inside() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("egress");
    let script = "import socket\ns = socket.create_connection(('127.0.0.1', 9099))\ns.sendall(b'ping')\nprint(s.recv(4).decode())\n";
    let started =
        common::backend().start(&common::python(script, &workspace), &reaper).await.expect("start");
    let listener = started.egress.try_clone().expect("clone listener");
    let served = tokio::task::spawn_blocking(move || {
        let (mut stream, peer) = listener.accept().expect("accept");
        let mut request = [0u8; 4];
        stream.read_exact(&mut request).expect("read");
        stream.write_all(b"pong").expect("write");
        (request, peer)
    });
    let finished = common::finish(started).await;
    let (request, peer) = served.await.expect("server");
    assert_eq!(&request, b"ping");
    assert!(peer.ip().is_loopback(), "{peer}");
    assert_eq!(finished.stdout.trim(), "pong", "{finished:?}");
}

#[tokio::test]
async fn host_abstract_unix_socket_is_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let reaper = common::reaper();
    let workspace = common::TempDir::new("abstract");
    let name = format!("bottle-local-test-{}", std::process::id());
    let address =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let server = std::os::unix::net::UnixListener::bind_addr(&address).expect("abstract listener");
    server.set_nonblocking(true).expect("nonblocking");
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('\\0{name}')\n    print('connected')\nexcept OSError as e:\n    print('errno', e.errno)\n"
    );
    let finished = common::run(&reaper, &common::python(&script, &workspace)).await;
    assert_eq!(finished.stdout.trim(), format!("errno {}", libc::ECONNREFUSED), "{finished:?}");
    assert_eq!(server.accept().err().map(|e| e.kind()), Some(std::io::ErrorKind::WouldBlock));
}
