//! The authority itself: minting, constraints, the leaf cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// rcgen or ring failed (key generation, signing, encoding).
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// The host is outside the CA's name constraints: no verifier would accept a leaf.
    #[error("{host:?} is outside this CA's name constraints")]
    OutsideConstraints {
        /// The refused host.
        host: String,
    },
    /// Not a DNS name or IP address we can put in a certificate.
    #[error("{host:?} is not a valid host name")]
    BadHost {
        /// The refused host.
        host: String,
    },
}

fn generate(err: impl std::fmt::Display) -> CaError {
    CaError::Generate(err.to_string())
}

/// How to mint the CA.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// CA validity from now (bottle lifetime plus margin). Default 7 days.
    pub lifetime: Duration,
    /// Leaf validity from now. Default 24 h.
    pub leaf_lifetime: Duration,
    /// Hosts (DNS names or IP addresses) the CA may issue for, and their subdomains. An
    /// empty list permits only `invalid` (nothing real). There is no unconstrained CA, in
    /// tests either: a test that needs many names permits a parent domain.
    pub permitted: Vec<String>,
    /// Leaves kept in the cache.
    pub cache_capacity: usize,
    /// Shown in the certificate subject.
    pub common_name: String,
}

impl Default for CaConfig {
    fn default() -> CaConfig {
        CaConfig {
            lifetime: Duration::from_secs(7 * 24 * 3600),
            leaf_lifetime: Duration::from_secs(24 * 3600),
            permitted: Vec::new(),
            cache_capacity: 1024,
            common_name: "bottle per-bottle CA".into(),
        }
    }
}

struct CachedLeaf {
    key: Arc<CertifiedKey>,
    expires: Instant,
    last_used: u64,
}

type Inflight = Arc<OnceLock<Result<Arc<CertifiedKey>, CaError>>>;

/// A minted CA and its leaf cache. Share it as `Arc<CertificateAuthority>`.
pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    cert_pem: String,
    fingerprint: String,
    config: CaConfig,
    permitted: Vec<Permit>,
    cache: Mutex<HashMap<String, CachedLeaf>>,
    inflight: Mutex<HashMap<String, Inflight>>,
    tick: AtomicU64,
    minted: AtomicU64,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Permit {
    Dns(String),
    Ip(IpAddr),
}

impl Permit {
    fn parse(host: &str) -> Result<Permit, CaError> {
        let bad = || CaError::BadHost { host: host.to_string() };
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(Permit::Ip(ip));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if valid { Ok(Permit::Dns(name)) } else { Err(bad()) }
    }

    /// RFC 5280 semantics: a DNS constraint covers the name and its subdomains.
    fn covers(&self, host: &Permit) -> bool {
        match (self, host) {
            (Permit::Ip(a), Permit::Ip(b)) => a == b,
            (Permit::Dns(c), Permit::Dns(h)) => h == c || h.ends_with(&format!(".{c}")),
            _ => false,
        }
    }
}

/// The X.509 name constraints of a CA that may sign only for `permits`.
fn name_constraints(permits: &[Permit]) -> NameConstraints {
    let mut subtrees: Vec<GeneralSubtree> = permits
        .iter()
        .map(|p| match p {
            Permit::Dns(name) => GeneralSubtree::DnsName(name.clone()),
            Permit::Ip(ip) => {
                CidrSubnet::from_addr_prefix(*ip, if ip.is_ipv4() { 32 } else { 128 })
                    .into_subtree()
            }
        })
        .collect();
    // A constraint binds only its own name type (RFC 5280): close the other type
    // explicitly, or a DNS-only CA could still sign for any IP and vice versa.
    if !permits.iter().any(|p| matches!(p, Permit::Dns(_))) {
        // RFC 2606: `invalid` never resolves.
        subtrees.push(GeneralSubtree::DnsName("invalid".into()));
    }
    let mut excluded = Vec::new();
    if !permits.iter().any(|p| matches!(p, Permit::Ip(_))) {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([0, 0, 0, 0], 0)));
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix([0; 16], 0)));
    }
    NameConstraints { permitted_subtrees: subtrees, excluded_subtrees: excluded }
}

fn offset(from_now: Duration, back: bool) -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    let d = time::Duration::try_from(from_now).unwrap_or(time::Duration::ZERO);
    if back { now - d } else { now + d }
}

impl CertificateAuthority {
    /// Mints a fresh CA.
    pub fn mint(config: CaConfig) -> Result<CertificateAuthority, CaError> {
        let permitted =
            config.permitted.iter().map(|h| Permit::parse(h)).collect::<Result<Vec<_>, _>>()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, config.common_name.clone());
        dn.push(DnType::OrganizationName, "bottle");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(Duration::from_secs(3600), true);
        params.not_after = offset(config.lifetime, false);
        params.name_constraints = Some(name_constraints(&permitted));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(generate)?;
        let cert_pem = issuer.pem();
        let digest = ring::digest::digest(&ring::digest::SHA256, issuer.der());
        let fingerprint =
            digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        Ok(CertificateAuthority {
            issuer,
            cert_pem,
            fingerprint,
            config,
            permitted,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            minted: AtomicU64::new(0),
        })
    }

    /// The CA certificate (PEM), for the agent's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// SHA-256 fingerprint, `AB:CD:...`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Leaves minted so far (cache misses).
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// Leaves currently cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether a leaf for `host` would be inside the name constraints.
    pub fn permits(&self, host: &str) -> bool {
        let Ok(permit) = Permit::parse(host) else { return false };
        self.permitted.iter().any(|c| c.covers(&permit))
    }

    /// The leaf for `host`, from the cache or freshly minted. Concurrent first calls
    /// for one host mint once (the others wait for it).
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !self.permits(&host) {
            return Err(if Permit::parse(&host).is_err() {
                CaError::BadHost { host }
            } else {
                CaError::OutsideConstraints { host }
            });
        }
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = cache.get_mut(&host)
                && hit.expires > Instant::now()
            {
                hit.last_used = tick;
                return Ok(hit.key.clone());
            }
        }
        let cell: Inflight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            // Re-check under the in-flight lock: a minter inserts into the cache before
            // it removes its in-flight entry, so a late caller sees one or the other.
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = cache.get(&host)
                && hit.expires > Instant::now()
            {
                return Ok(hit.key.clone());
            }
            drop(cache);
            inflight.entry(host.clone()).or_default().clone()
        };
        let result = cell.get_or_init(|| self.mint_leaf(&host)).clone();
        let key = match result {
            Ok(key) => key,
            Err(err) => {
                // A failure is not cached: the next request tries again.
                self.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&host);
                return Err(err);
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.contains_key(&host)
            || cache.get(&host).is_some_and(|c| !Arc::ptr_eq(&c.key, &key))
        {
            if cache.len() >= self.config.cache_capacity.max(1)
                && let Some(oldest) =
                    cache.iter().min_by_key(|(_, v)| v.last_used).map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
            // Refresh a little before expiry so no handshake gets a stale leaf.
            let ttl = self
                .config
                .leaf_lifetime
                .saturating_sub(Duration::from_secs(300))
                .max(Duration::from_secs(1));
            cache.insert(
                host.clone(),
                CachedLeaf { key: key.clone(), expires: Instant::now() + ttl, last_used: tick },
            );
        }
        drop(cache);
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&host);
        Ok(key)
    }

    fn mint_leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match Permit::parse(host)? {
            Permit::Ip(ip) => SanType::IpAddress(ip),
            Permit::Dns(name) => SanType::DnsName(name.try_into().map_err(generate)?),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(Duration::from_secs(300), true);
        params.not_after = offset(self.config.leaf_lifetime, false);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&private).map_err(generate)?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone(), self.issuer.der().clone()], signer)))
    }

    /// Test and audit helper: a leaf for `host` signed by this CA *without* checking the
    /// constraints, to show that verifiers refuse it. Never used by the proxy.
    #[doc(hidden)]
    pub fn mint_unchecked_for_tests(
        &self,
        host: &str,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CaError> {
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(generate)?;
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok((
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// A rustls certificate resolver that mints by SNI.
    pub fn resolver(self: &Arc<Self>) -> Arc<LeafResolver> {
        Arc::new(LeafResolver { ca: self.clone() })
    }
}

trait IntoSubtree {
    fn into_subtree(self) -> GeneralSubtree;
}

impl IntoSubtree for CidrSubnet {
    fn into_subtree(self) -> GeneralSubtree {
        GeneralSubtree::IpAddress(self)
    }
}

/// Resolves the server certificate of a bumped TLS connection from its SNI.
#[derive(Debug)]
pub struct LeafResolver {
    ca: Arc<CertificateAuthority>,
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = client_hello.server_name()?;
        match self.ca.leaf(host) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::debug!(host, error = %err, "No leaf for this SNI.");
                None
            }
        }
    }
}
