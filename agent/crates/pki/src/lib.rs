#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod derive;
mod files;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cluster_config::ClusterSecret;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

pub use files::{write_cert_file, write_key_file};

/// Errors from deriving keys or issuing certificates.
#[derive(Debug, Error)]
pub enum PkiError {
    /// Key derivation for a label failed.
    #[error("deriving the key for {label}: {reason}")]
    Derive {
        /// Which key (for example `etcd-ca`).
        label: String,
        /// What went wrong.
        reason: String,
    },
    /// Encoding a key as PEM failed.
    #[error("encoding the {what} key as PEM: {reason}")]
    Encode {
        /// Which key.
        what: String,
        /// The encoder's message.
        reason: String,
    },
    /// Building or signing a certificate failed.
    #[error("issuing the certificate for {common_name:?}: {reason}")]
    Issue {
        /// The certificate's common name.
        common_name: String,
        /// rcgen's message (for example an invalid DNS name).
        reason: String,
    },
}

/// Fixed start of every CA's validity: not from the clock, so the CA
/// certificate is byte-identical on every master.
pub const CA_NOT_BEFORE: (i32, u8, u8) = (2025, 1, 1);
/// Fixed end of every CA's validity (10 years after [`CA_NOT_BEFORE`]).
pub const CA_NOT_AFTER: (i32, u8, u8) = (2035, 1, 1);
/// Lifetime of a leaf certificate (clamped to the CA's end). The agent
/// issues leaves at start-up, so a node re-issues on its next boot.
pub const LEAF_VALIDITY: Duration = Duration::days(365);
/// How far before `now` a leaf's validity starts, to absorb clock skew
/// between masters.
pub const LEAF_BACKDATE: Duration = Duration::hours(1);

/// A P-256 key derived from the secret, signing deterministically
/// (RFC 6979) through rcgen's [`rcgen::SigningKey`] trait, so the
/// self-signed CA certificates are byte-identical on every master. rcgen's
/// own ring-backed `KeyPair` signs with a random nonce.
#[derive(Clone)]
struct DerivedKey {
    key: p256::ecdsa::SigningKey,
    /// Uncompressed SEC1 public point, as rcgen expects for EC keys.
    point: Vec<u8>,
}

impl DerivedKey {
    fn new(secret: p256::SecretKey) -> Self {
        let key = p256::ecdsa::SigningKey::from(secret);
        let point = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        Self { key, point }
    }

    fn private_pem(&self, what: &str) -> Result<String, PkiError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| PkiError::Encode {
                what: what.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl rcgen::PublicKeyData for DerivedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for DerivedKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // SHA-256 + RFC 6979 deterministic nonce; X.509 wants the DER form.
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

/// A certificate authority: its certificate and (secret) private key.
#[derive(Clone)]
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM. Secret: write with [`write_key_file`].
    pub key_pem: String,
    cert_der: Vec<u8>,
    params: CertificateParams,
    signer: DerivedKey,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.params.distinguished_name)
            .field("pin", &self.spki_pin())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// An issued leaf certificate and its (secret, random, per-node) key.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM. Secret: write with [`write_key_file`].
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A key pair as PEM (the service-account signing key).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPairPem {
    /// Private key, PKCS#1 PEM (`RSA PRIVATE KEY`, kubeadm's `sa.key`, as
    /// kubeadm writes it). Secret.
    pub private_pem: String,
    /// Public key, SubjectPublicKeyInfo PEM (kubeadm's `sa.pub`).
    pub public_pem: String,
}

impl fmt::Debug for KeyPairPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPairPem")
            .field("public_pem", &self.public_pem)
            .field("private_pem", &"<redacted>")
            .finish()
    }
}

/// What a leaf certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (serverAuth).
    Server,
    /// TLS client (clientAuth).
    Client,
    /// Both: etcd peers dial and accept each other with one certificate.
    Peer,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    /// Subject common name (for a client, the user name it authenticates as).
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Key usage.
    pub usage: Usage,
    /// Subject organisation (for a Kubernetes client: its group).
    pub organization: Option<String>,
}

impl LeafRequest {
    /// A client certificate for `common_name` (no names, no organisation).
    pub fn client(common_name: &str) -> Self {
        LeafRequest {
            common_name: common_name.to_owned(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
            organization: None,
        }
    }
}

/// One CA's identity: the HKDF label and the subject common name.
struct CaSpec {
    label: &'static str,
    common_name: &'static str,
}

const KUBERNETES_CA: CaSpec = CaSpec {
    label: "kubernetes-ca",
    common_name: "kubernetes",
};
const ETCD_CA: CaSpec = CaSpec {
    label: "etcd-ca",
    common_name: "etcd-ca",
};
const FRONT_PROXY_CA: CaSpec = CaSpec {
    label: "front-proxy-ca",
    common_name: "front-proxy-ca",
};
const CONTROL_CA: CaSpec = CaSpec {
    label: "control-ca",
    common_name: "kubeboot-control-ca",
};
/// HKDF label of the service-account key's seed (`service-account` was
/// the earlier P-256 key's).
const SERVICE_ACCOUNT_LABEL: &str = "service-account-rsa";
/// Size of the service-account RSA key (kubeadm's own default).
pub const SERVICE_ACCOUNT_RSA_BITS: usize = 2048;

fn ymd(date: (i32, u8, u8)) -> OffsetDateTime {
    rcgen::date_time_ymd(date.0, date.1, date.2)
}

impl Ca {
    fn derive(secret: &ClusterSecret, cluster_name: &str, spec: &CaSpec) -> Result<Self, PkiError> {
        let signer = DerivedKey::new(derive::derive_p256(secret, cluster_name, spec.label)?);
        let serial = derive::derive_serial(secret, cluster_name, spec.label)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name);
        // The cluster name in the subject tells two clusters' CAs apart.
        dn.push(DnType::OrganizationalUnitName, cluster_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.not_before = ymd(CA_NOT_BEFORE);
        params.not_after = ymd(CA_NOT_AFTER);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&signer).map_err(|e| PkiError::Issue {
            common_name: spec.common_name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: signer.private_pem(spec.label)?,
            cert_der: cert.der().to_vec(),
            params,
            signer,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.signer)
    }

    /// kubeadm's `discovery-token-ca-cert-hash`: `sha256:` and the hex
    /// SHA-256 of the CA's DER SubjectPublicKeyInfo.
    pub fn spki_pin(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.spki_der())))
    }

    /// Issues a leaf certificate valid from now (see [`Ca::issue_at`]).
    pub fn issue(&self, req: &LeafRequest) -> Result<Issued, PkiError> {
        self.issue_at(req, OffsetDateTime::now_utc())
    }

    /// Issues a leaf certificate with a fresh random P-256 key, valid from
    /// `now - LEAF_BACKDATE` for [`LEAF_VALIDITY`] (never past the CA).
    pub fn issue_at(&self, req: &LeafRequest, now: OffsetDateTime) -> Result<Issued, PkiError> {
        let fail = |reason: String| PkiError::Issue {
            common_name: req.common_name.clone(),
            reason,
        };
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.common_name.as_str());
        if let Some(org) = &req.organization {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        let mut sans = Vec::with_capacity(req.dns_names.len() + req.ips.len());
        for name in &req.dns_names {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| fail(format!("DNS name {name:?}: {e}")))?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(req.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match req.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        let ca_end = self.params.not_after;
        params.not_before = (now - LEAF_BACKDATE).max(self.params.not_before);
        params.not_after = (now + LEAF_VALIDITY).min(ca_end);
        if params.not_before >= params.not_after {
            return Err(fail(format!(
                "the CA is not valid at {now} (it ends {ca_end})"
            )));
        }
        let issuer = Issuer::from_params(&self.params, &self.signer);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The CAs every node derives from the cluster secret: identical on
/// every master, computed locally, never exchanged. (The service-account
/// key is [`derive_service_account`].)
#[derive(Debug, Clone)]
pub struct ClusterPki {
    /// Signs the API server, kubelet and admin certificates (kubeadm's `ca`).
    pub kubernetes_ca: Ca,
    /// Signs etcd server, peer and client certificates (`etcd/ca`).
    pub etcd_ca: Ca,
    /// Signs the aggregation layer's client certificate (`front-proxy-ca`).
    pub front_proxy_ca: Ca,
    /// Signs the agents' remote control endpoint and its clients (`agent
    /// recover --node`): only a holder of the secret can issue a client
    /// certificate, and no node keeps one on disk.
    pub control_ca: Ca,
}

impl ClusterPki {
    /// Derives the four CAs from the secret. The same `secret` and
    /// `cluster_name` give byte-identical output.
    pub fn derive(secret: &ClusterSecret, cluster_name: &str) -> Result<Self, PkiError> {
        Ok(ClusterPki {
            kubernetes_ca: Ca::derive(secret, cluster_name, &KUBERNETES_CA)?,
            etcd_ca: Ca::derive(secret, cluster_name, &ETCD_CA)?,
            front_proxy_ca: Ca::derive(secret, cluster_name, &FRONT_PROXY_CA)?,
            control_ca: Ca::derive(secret, cluster_name, &CONTROL_CA)?,
        })
    }
}

/// Derives the service-account token signing key pair (kubeadm's `sa.key`
/// and `sa.pub`): RSA with [`SERVICE_ACCOUNT_RSA_BITS`] bits, because
/// kubeadm before 1.25 loads an existing `sa.key` only if it is RSA
/// (`TryLoadPrivatePublicKeyFromDisk`: "isn't in RSA format") and every
/// later kubeadm accepts RSA too. Deterministic: the same `secret` and
/// `cluster_name` give the same bytes (see `derive.rs` for what that
/// depends on). Takes tens to hundreds of milliseconds (a prime search).
pub fn derive_service_account(
    secret: &ClusterSecret,
    cluster_name: &str,
) -> Result<KeyPairPem, PkiError> {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::EncodePublicKey as _;
    let key = derive::derive_rsa(
        secret,
        cluster_name,
        SERVICE_ACCOUNT_LABEL,
        SERVICE_ACCOUNT_RSA_BITS,
    )?;
    let encode = |reason: String| PkiError::Encode {
        what: SERVICE_ACCOUNT_LABEL.to_owned(),
        reason,
    };
    let private_pem = key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| encode(e.to_string()))?
        .to_string();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| encode(e.to_string()))?;
    Ok(KeyPairPem {
        private_pem,
        public_pem,
    })
}

/// The certificates one etcd member (and its clients on that node) needs.
#[derive(Debug, Clone)]
pub struct EtcdMemberCerts {
    /// `--cert-file`/`--key-file`: client-facing server certificate.
    pub server: Issued,
    /// `--peer-cert-file`/`--peer-key-file`: server and client to peers.
    pub peer: Issued,
    /// The agent's own etcd client certificate (member operations, health).
    pub agent_client: Issued,
    /// kube-apiserver's etcd client certificate (`apiserver-etcd-client`).
    pub apiserver_client: Issued,
}

/// Common name of the agent's etcd client certificate.
pub const AGENT_ETCD_CLIENT_CN: &str = "kubeboot-agent";
/// Common name of the API server's etcd client certificate (as kubeadm).
pub const APISERVER_ETCD_CLIENT_CN: &str = "kube-apiserver-etcd-client";

/// Issues the etcd member certificates for `node_name` with `ips`.
///
/// The server certificate names the node, its addresses, `localhost`,
/// `127.0.0.1` and `::1`; the peer certificate names the node and its
/// addresses. Both carry serverAuth and clientAuth, as kubeadm's do.
pub fn etcd_member_certs(
    etcd_ca: &Ca,
    node_name: &str,
    ips: &[IpAddr],
) -> Result<EtcdMemberCerts, PkiError> {
    etcd_member_certs_at(etcd_ca, node_name, ips, OffsetDateTime::now_utc())
}

/// [`etcd_member_certs`] at a given time (pure apart from key generation).
pub fn etcd_member_certs_at(
    etcd_ca: &Ca,
    node_name: &str,
    ips: &[IpAddr],
    now: OffsetDateTime,
) -> Result<EtcdMemberCerts, PkiError> {
    let mut server_ips = ips.to_vec();
    for lo in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        if !server_ips.contains(&lo) {
            server_ips.push(lo);
        }
    }
    let server = LeafRequest {
        common_name: node_name.to_owned(),
        dns_names: vec![node_name.to_owned(), "localhost".to_owned()],
        ips: server_ips,
        usage: Usage::Peer,
        organization: None,
    };
    let peer = LeafRequest {
        common_name: node_name.to_owned(),
        dns_names: vec![node_name.to_owned()],
        ips: ips.to_vec(),
        usage: Usage::Peer,
        organization: None,
    };
    let client = |cn: &str| LeafRequest {
        common_name: cn.to_owned(),
        dns_names: Vec::new(),
        ips: Vec::new(),
        usage: Usage::Client,
        organization: None,
    };
    Ok(EtcdMemberCerts {
        server: etcd_ca.issue_at(&server, now)?,
        peer: etcd_ca.issue_at(&peer, now)?,
        agent_client: etcd_ca.issue_at(&client(AGENT_ETCD_CLIENT_CN), now)?,
        apiserver_client: etcd_ca.issue_at(&client(APISERVER_ETCD_CLIENT_CN), now)?,
    })
}
