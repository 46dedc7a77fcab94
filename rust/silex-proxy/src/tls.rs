//! TLS termination: certificates from the routing table, the SNI resolver, the default
//! certificate, and the rustls server configuration of HTTPS listeners.
//!
//! - **Material.** Each table generation carries its certificates, parsed and checked when the
//!   table is applied ([`TlsTable::build`]): PEM via rustls-pki-types, the private key loaded by
//!   the ring provider and compared with the certificate's public key. An invalid entry rejects
//!   the table with its JSON path (the operator validates Secrets first and never sends one).
//! - **Selection.** [`TlsTable::select`] maps a server name (SNI, or a request's `Host`) to a
//!   certificate: an exact name of some certificate's `hosts`, else a one-label wildcard, and
//!   only if the certificate itself covers the name (its subject alternative names, checked by
//!   webpki); else the default certificate (the table's `default_certificate`, else the
//!   self-signed one generated at start). Never another tenant's certificate.
//! - **Rotation.** The resolver reads the current generation for every handshake, so a swapped
//!   table changes the certificate of new handshakes; established connections keep theirs.
//! - **Policy.** TLS 1.3 and 1.2 only, the ring provider's suites (AEAD with ECDHE only),
//!   ALPN `h2` and `http/1.1`, session resumption by tickets (TLS 1.3 and 1.2) and a
//!   server-side session cache.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use silex_routing::{normalize_host, RoutingTable, TableError};

use crate::state::Shared;

/// ALPN identifier of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// ALPN identifier of HTTP/1.1.
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";

pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// One certificate of a generation.
#[derive(Debug)]
struct Entry {
    id: Arc<str>,
    key: Arc<CertifiedKey>,
}

/// The certificates of one table generation and the server names they serve.
#[derive(Debug, Default)]
pub(crate) struct TlsTable {
    entries: Vec<Entry>,
    exact: HashMap<Box<str>, usize>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<str>, usize>,
    default: Option<usize>,
}

/// The certificate chosen for a server name: its id, or `None` for the built-in default.
pub(crate) type Selected = Option<Arc<str>>;

impl TlsTable {
    /// Parses and checks every certificate of `table` (names were validated by the routing
    /// compile step). Errors name the JSON path of the bad value.
    pub(crate) fn build(table: &RoutingTable) -> Result<Self, TableError> {
        let mut tls = TlsTable::default();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (id, certificate) in &table.certificates {
            let at = format!("$.certificates[{}]", json_string(id));
            let key = certified_key(&certificate.cert_pem, &certificate.key_pem)
                .map_err(|(field, message)| TableError::new(format!("{at}.{field}"), message))?;
            let position = tls.entries.len();
            for name in &certificate.hosts {
                if let Some(suffix) = name.strip_prefix("*.") {
                    tls.wildcard.insert(suffix.into(), position);
                } else if covers(&key, name) {
                    tls.exact.insert(name.as_str().into(), position);
                } else {
                    tracing::warn!(
                        certificate = %id,
                        host = %name,
                        "the certificate does not cover this name; it gets the default certificate"
                    );
                }
            }
            index.insert(id, position);
            tls.entries.push(Entry {
                id: Arc::from(id.as_str()),
                key: Arc::new(key),
            });
        }
        tls.default = table
            .default_certificate
            .as_deref()
            .and_then(|id| index.get(id).copied());
        Ok(tls)
    }

    fn select_index(&self, name: Option<&str>) -> Option<usize> {
        let normalized = name.and_then(normalize_host);
        if let Some(name) = normalized.as_deref() {
            if let Some(&i) = self.exact.get(name) {
                return Some(i);
            }
            if let Some((first, rest)) = name.split_once('.') {
                if !first.is_empty() {
                    if let Some(&i) = self.wildcard.get(rest) {
                        if self.entries.get(i).is_some_and(|e| covers(&e.key, name)) {
                            return Some(i);
                        }
                    }
                }
            }
        }
        self.default
    }

    /// The id of the certificate served for `name` (`None`: no SNI or the `Host` is absent).
    pub(crate) fn select(&self, name: Option<&str>) -> Selected {
        self.select_index(name)
            .and_then(|i| self.entries.get(i))
            .map(|e| Arc::clone(&e.id))
    }

    fn key_for(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.select_index(name)
            .and_then(|i| self.entries.get(i))
            .map(|e| Arc::clone(&e.key))
    }
}

/// `s` as a JSON string literal (the key syntax of table error paths).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Whether the end-entity certificate of `key` is valid for the DNS name `name`.
fn covers(key: &CertifiedKey, name: &str) -> bool {
    let Some(der) = key.cert.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(dns) = DnsName::try_from(name.to_owned()) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&ServerName::DnsName(dns))
        .is_ok()
}

/// Parses a PEM chain and key into a [`CertifiedKey`] usable by the ring provider. The error
/// names the field (`cert_pem` or `key_pem`) and what is wrong.
pub(crate) fn certified_key(
    cert_pem: &str,
    key_pem: &str,
) -> Result<CertifiedKey, (&'static str, String)> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("cert_pem", format!("invalid PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(("cert_pem", "no CERTIFICATE block found".to_owned()));
    };
    webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| ("cert_pem", format!("not a valid X.509 certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ("key_pem", format!("no usable PEM private key: {e}")))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| ("key_pem", format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err((
            "key_pem",
            "the private key does not match the certificate".to_owned(),
        )),
        Err(e) => Err(("cert_pem", format!("invalid certificate: {e}"))),
    }
}

/// Checks a certificate and key as [`TlsTable::build`] would, and returns the names of `hosts`
/// the certificate does not cover. `Err` says what is wrong (`cert_pem: ...` / `key_pem: ...`).
pub fn check_certificate(
    cert_pem: &str,
    key_pem: &str,
    hosts: &[String],
) -> Result<Vec<String>, String> {
    let key = certified_key(cert_pem, key_pem).map_err(|(field, m)| format!("{field}: {m}"))?;
    Ok(hosts
        .iter()
        .filter(|name| {
            let probe = match name.strip_prefix("*.") {
                // A wildcard name is covered when the certificate covers any one-label name
                // under it; `*.suffix` itself is what a wildcard SAN matches.
                Some(suffix) => format!("silex-wildcard-probe.{suffix}"),
                None => (*name).clone(),
            };
            !covers(&key, &probe)
        })
        .cloned()
        .collect())
}

/// The notAfter time of the first (leaf) certificate of a PEM chain, in Unix seconds: what the
/// operator exports as the certificate's expiry. `Err` says what is wrong (`cert_pem: ...`).
pub fn certificate_not_after(cert_pem: &str) -> Result<i64, String> {
    validity(cert_pem).map(|(_, not_after)| not_after)
}

/// `(notBefore, notAfter)` of the leaf certificate of a PEM chain, in Unix seconds.
pub(crate) fn validity(cert_pem: &str) -> Result<(i64, i64), String> {
    let leaf = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .ok_or_else(|| "cert_pem: no CERTIFICATE block found".to_owned())?
        .map_err(|e| format!("cert_pem: invalid PEM: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("cert_pem: not a valid X.509 certificate: {e}"))?;
    let validity = parsed.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// The self-signed certificate served when nothing else applies (like ingress-nginx's "fake"
/// certificate); generated once per data plane.
pub(crate) fn self_signed() -> Result<Arc<CertifiedKey>, String> {
    let generated = rcgen::generate_simple_self_signed(vec!["silex.invalid".to_owned()])
        .map_err(|e| format!("cannot generate the default certificate: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("cannot load the default certificate's key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![generated.cert.der().clone()],
        signing_key,
    )))
}

/// Picks the certificate for each handshake from the serving generation.
#[derive(Debug)]
struct SniResolver {
    shared: Arc<Shared>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let generation = self.shared.table.load();
        Some(
            generation
                .tls
                .key_for(client_hello.server_name())
                .unwrap_or_else(|| Arc::clone(&self.shared.default_certificate)),
        )
    }
}

/// The rustls configuration of an HTTPS listener.
pub(crate) fn server_config(shared: Arc<Shared>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { shared }));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    // An unknown ALPN protocol offered alone is refused rather than served as HTTP/1.1.
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn generated(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    fn table(certs: &[(&str, &(String, String), &[&str])], default: Option<&str>) -> RoutingTable {
        let mut value = serde_json::json!({"version": 1, "certificates": {}});
        for (id, (cert, key), hosts) in certs {
            value["certificates"][*id] =
                serde_json::json!({"cert_pem": cert, "key_pem": key, "hosts": hosts});
        }
        if let Some(id) = default {
            value["default_certificate"] = serde_json::json!(id);
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn not_after_of_the_leaf_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        // 2031-05-17T00:00:00Z
        assert_eq!(certificate_not_after(&pem), Ok(1_936_742_400));
        let late = {
            let mut params = rcgen::CertificateParams::new(vec!["b".to_owned()]).unwrap();
            params.not_after = rcgen::date_time_ymd(2060, 1, 1); // GeneralizedTime after 2049
            params.self_signed(&key).unwrap().pem()
        };
        assert_eq!(certificate_not_after(&late), Ok(2_840_140_800));
        assert!(certificate_not_after("junk")
            .unwrap_err()
            .starts_with("cert_pem: no CERTIFICATE"));
        let broken = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        assert!(certificate_not_after(broken)
            .unwrap_err()
            .starts_with("cert_pem: not a valid X.509 certificate"));
    }

    #[test]
    fn selection_exact_wildcard_default_and_san_check() {
        let a = generated(&["a.example.com"]);
        let w = generated(&["*.w.example.com"]);
        let wrong = generated(&["other.example.com"]);
        let t = TlsTable::build(&table(
            &[
                ("ns/a", &a, &["a.example.com"]),
                ("ns/w", &w, &["*.w.example.com"]),
                ("ns/wrong", &wrong, &["b.example.com"]),
            ],
            None,
        ))
        .unwrap();
        assert_eq!(t.select(Some("a.example.com")).as_deref(), Some("ns/a"));
        assert_eq!(t.select(Some("A.Example.com.")).as_deref(), Some("ns/a"));
        assert_eq!(t.select(Some("x.w.example.com")).as_deref(), Some("ns/w"));
        assert_eq!(t.select(Some("y.x.w.example.com")), None);
        assert_eq!(t.select(Some("w.example.com")), None);
        // Not covered by its own SANs: the default certificate.
        assert_eq!(t.select(Some("b.example.com")), None);
        assert_eq!(t.select(None), None);
    }

    #[test]
    fn table_default_certificate() {
        let a = generated(&["a.example.com"]);
        let d = generated(&["default.example.com"]);
        let t = TlsTable::build(&table(
            &[("ns/a", &a, &["a.example.com"]), ("ns/d", &d, &[])],
            Some("ns/d"),
        ))
        .unwrap();
        assert_eq!(
            t.select(Some("unknown.example.com")).as_deref(),
            Some("ns/d")
        );
        assert_eq!(t.select(None).as_deref(), Some("ns/d"));
    }

    #[test]
    fn bad_material_names_the_field() {
        let a = generated(&["a.example.com"]);
        let b = generated(&["b.example.com"]);
        let mismatched = (a.0.clone(), b.1.clone());
        let error = TlsTable::build(&table(&[("ns/x", &mismatched, &[])], None)).unwrap_err();
        assert_eq!(error.path(), "$.certificates[\"ns/x\"].key_pem");
        assert!(error.message().contains("does not match"), "{error}");
        let garbage = ("not pem".to_owned(), a.1.clone());
        let error = TlsTable::build(&table(&[("ns/x", &garbage, &[])], None)).unwrap_err();
        assert_eq!(error.path(), "$.certificates[\"ns/x\"].cert_pem");
        let no_key = (
            a.0.clone(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
        );
        let error = TlsTable::build(&table(&[("ns/x", &no_key, &[])], None)).unwrap_err();
        assert_eq!(error.path(), "$.certificates[\"ns/x\"].key_pem");
    }

    #[test]
    fn check_reports_uncovered_names() {
        let (cert, key) = generated(&["a.example.com", "*.w.example.com"]);
        let hosts = vec![
            "a.example.com".to_owned(),
            "*.w.example.com".to_owned(),
            "b.example.com".to_owned(),
        ];
        assert_eq!(
            check_certificate(&cert, &key, &hosts).unwrap(),
            vec!["b.example.com".to_owned()]
        );
        assert!(check_certificate(&cert, "junk", &hosts).is_err());
    }

    #[test]
    fn self_signed_and_config_build() {
        assert!(self_signed().is_ok());
    }
}
