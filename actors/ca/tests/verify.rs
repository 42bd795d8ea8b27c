//! The CA's certificates as standard verifiers see them: rustls/webpki and OpenSSL
//! accept leaves for permitted hosts and refuse leaves for any other host, because of
//! the name constraints (a leaked CA is useless elsewhere).
#![allow(clippy::disallowed_methods)] // runs the openssl CLI

use std::sync::Arc;
use std::time::Duration;

use bottle_ca::{CaConfig, CaError, CertificateAuthority};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn ca(permitted: &[&str]) -> Arc<CertificateAuthority> {
    let config = CaConfig {
        permitted: permitted.iter().map(|s| s.to_string()).collect(),
        ..CaConfig::default()
    };
    Arc::new(CertificateAuthority::mint(config).unwrap())
}

fn webpki_verify(
    ca: &CertificateAuthority,
    leaf: &CertificateDer<'static>,
    host: &str,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from(host.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(drop)
}

fn pem(der: &[u8], label: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let body: Vec<String> =
        b64.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", body.join("\n"))
}

fn openssl_verify(ca: &CertificateAuthority, leaf: &CertificateDer<'static>) -> (bool, String) {
    let dir =
        std::env::temp_dir().join(format!("bottle-ca-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), pem(leaf, "CERTIFICATE")).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .expect("openssl");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        as u64
}

#[test]
fn a_leaf_for_a_permitted_host_verifies_with_webpki_and_openssl() {
    let ca = ca(&["api.example.com", "10.1.2.3"]);
    let leaf = ca.leaf("api.example.com").unwrap();
    webpki_verify(&ca, &leaf.cert[0], "api.example.com").unwrap();
    let (ok, text) = openssl_verify(&ca, &leaf.cert[0]);
    assert!(ok, "{text}");
    let ip_leaf = ca.leaf("10.1.2.3").unwrap();
    webpki_verify(&ca, &ip_leaf.cert[0], "10.1.2.3").unwrap();
}

#[test]
fn a_leaf_for_a_host_outside_the_constraints_is_refused_by_webpki_and_openssl() {
    let ca = ca(&["api.example.com"]);
    // The CA itself refuses to mint it...
    assert_eq!(
        ca.leaf("evil.example.org").unwrap_err(),
        CaError::OutsideConstraints { host: "evil.example.org".into() }
    );
    // ...and a leaf forced with its key (as a thief would) fails verification.
    let (rogue, _) = ca.mint_unchecked_for_tests("evil.example.org").unwrap();
    let err = webpki_verify(&ca, &rogue, "evil.example.org").unwrap_err();
    assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
    let (ok, text) = openssl_verify(&ca, &rogue);
    assert!(!ok, "openssl accepted a leaf outside the constraints: {text}");
    assert!(text.contains("permitted subtree violation"), "{text}");
}

#[test]
fn a_ca_with_no_bumped_hosts_can_sign_nothing_real() {
    let ca = ca(&[]);
    ca.leaf("example.com").unwrap_err();
    let (rogue, _) = ca.mint_unchecked_for_tests("example.com").unwrap();
    webpki_verify(&ca, &rogue, "example.com").unwrap_err();
}

#[test]
fn the_ca_is_p256_pathlen_0_short_lived_and_fresh_each_time() {
    let a = ca(&["api.example.com"]);
    let b = ca(&["api.example.com"]);
    assert_ne!(a.fingerprint(), b.fingerprint());
    let dir = std::env::temp_dir().join(format!("bottle-ca-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), a.cert_pem()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");
    assert!(text.contains("Permitted:") && text.contains("DNS:api.example.com"), "{text}");
    // Valid for about 7 days, not years.
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((8 * 24 * 3600).to_string())
        .arg("-in")
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the CA outlives 8 days");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((6 * 24 * 3600).to_string())
        .arg("-in")
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "the CA dies before 6 days");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_first_requests_for_one_host_mint_once_and_the_cache_is_bounded() {
    let config = CaConfig {
        // Every host below is under `example`.
        permitted: vec!["example".into()],
        cache_capacity: 4,
        leaf_lifetime: Duration::from_secs(3600),
        ..CaConfig::default()
    };
    let ca = Arc::new(CertificateAuthority::mint(config).unwrap());
    // 20 rounds of 16 threads racing for one new host each: exactly one mint per host.
    for round in 0..20 {
        let host = format!("same{round}.example");
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (ca, host, barrier) = (ca.clone(), host.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    ca.leaf(&host).unwrap()
                })
            })
            .collect();
        let leaves: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ca.minted(), round + 1, "round {round}");
        assert!(leaves.iter().all(|l| Arc::ptr_eq(l, &leaves[0])));
    }
    for i in 0..10 {
        ca.leaf(&format!("h{i}.example")).unwrap();
    }
    assert!(ca.cached() <= 4, "cache grew to {}", ca.cached());
    assert_eq!(ca.minted(), 30);
}

#[tokio::test]
async fn a_bumped_handshake_presents_a_leaf_for_the_sni_chained_to_the_ca() {
    let ca = ca(&["bumped.example"]);
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(ca.resolver());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move { acceptor.accept(b).await.map(drop) });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tls = connector.connect(ServerName::try_from("bumped.example").unwrap(), a).await.unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap();
    assert_eq!(peer.len(), 2);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_ca_actor_mints_at_start_and_hands_out_the_shared_authority() {
    use bottle_ca::{CaActor, CaArgs, CaMsg};
    let config = CaConfig { permitted: vec!["a.example".into()], ..CaConfig::default() };
    let (actor, handle) = ractor::Actor::spawn(None, CaActor, CaArgs { config }).await.unwrap();
    let status = ractor::call_t!(actor, CaMsg::Status, 1000).unwrap();
    assert_eq!(status.minted, 0);
    assert!(status.cert_pem.contains("BEGIN CERTIFICATE") && !status.cert_pem.contains("PRIVATE"));
    let authority = ractor::call_t!(actor, CaMsg::Authority, 1000).unwrap();
    assert_eq!(authority.fingerprint(), status.fingerprint);
    authority.leaf("a.example").unwrap();
    assert_eq!(ractor::call_t!(actor, CaMsg::Status, 1000).unwrap().minted, 1);
    actor.stop(None);
    handle.await.unwrap();
}

#[test]
fn a_dns_only_ca_cannot_sign_for_an_ip_and_an_ip_only_ca_cannot_sign_for_a_name() {
    let dns_only = ca(&["api.example.com"]);
    let (rogue, _) = dns_only.mint_unchecked_for_tests("10.0.0.1").unwrap();
    webpki_verify(&dns_only, &rogue, "10.0.0.1").unwrap_err();
    let (ok, text) = openssl_verify(&dns_only, &rogue);
    assert!(!ok, "{text}");
    let ip_only = ca(&["10.0.0.1"]);
    let (rogue, _) = ip_only.mint_unchecked_for_tests("example.com").unwrap();
    webpki_verify(&ip_only, &rogue, "example.com").unwrap_err();
    let leaf = ip_only.leaf("10.0.0.1").unwrap();
    webpki_verify(&ip_only, &leaf.cert[0], "10.0.0.1").unwrap();
}
