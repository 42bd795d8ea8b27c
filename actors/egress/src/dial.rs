//! Resolving and connecting to an upstream, with the address check in between.
//!
//! Hazard: checking a name and then letting the connector resolve it again opens a DNS
//! rebinding window (public at check time, 127.0.0.1 at connect time). Here the name is
//! resolved once, every address it returns must be public (one private answer blocks the
//! whole name: fail closed), and the checked address is the one dialled. Only an
//! operator-pinned `connect` address or an IP a route names explicitly skips the check.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::addr::{self, AddrClass};

/// Why an upstream could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The name resolves to a non-public address.
    #[error("{host} resolves to {ip}, a {class:?} address")]
    NotPublic {
        /// The name.
        host: String,
        /// The offending address.
        ip: std::net::IpAddr,
        /// Its class.
        class: AddrClass,
    },
    /// DNS failed.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No address at all.
    #[error("{host} has no address")]
    NoAddress {
        /// The name.
        host: String,
    },
    /// TCP connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Resolving or connecting took too long.
    #[error("timed out reaching {host}")]
    Timeout {
        /// The name.
        host: String,
    },
}

/// Resolves `host` (unless `pinned`), checks every address, connects to the first.
/// `route_names_ip` means the route's host is this IP literal: operator intent.
pub async fn connect(
    host: &str,
    port: u16,
    pinned: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let attempt = async {
        let addr = match pinned {
            Some(addr) => addr,
            None => match addr::parse_ip_literal(host) {
                // A route named this IP: the operator chose it.
                Some(ip) => SocketAddr::new(ip, port),
                None => {
                    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                        .await
                        .map_err(|source| DialError::Resolve { host: host.to_string(), source })?
                        .collect();
                    for a in &addrs {
                        let class = addr::classify(a.ip());
                        if class != AddrClass::Public {
                            return Err(DialError::NotPublic {
                                host: host.to_string(),
                                ip: a.ip(),
                                class,
                            });
                        }
                    }
                    *addrs.first().ok_or_else(|| DialError::NoAddress { host: host.to_string() })?
                }
            },
        };
        let stream =
            TcpStream::connect(addr).await.map_err(|source| DialError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        Ok((stream, addr))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| DialError::Timeout { host: host.to_string() })?
}
