//! TLS and mutual TLS on real sockets with real handshakes: certificates are made at test time (a
//! CA that signs the server and a till, and a second CA that signs a stranger's till), the engine
//! loads them through its `[tls]` section, and tonic clients connect with or without them.
//!
//! Success and failure are judged by the gRPC health service, which stays unauthenticated when
//! checkout calls need API keys; "the call reached the handler" accepts NOT_FOUND (no such
//! customer) or UNAUTHENTICATED (no API key).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loyalty_engine::tls::{ClientAuth, TlsConfig, client_cert_fingerprint};
use loyalty_proto::v1::loyalty_service_client::LoyaltyServiceClient;
use loyalty_tests::{TestServer, card, get_account};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::Digest;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Longest a connection attempt or a call may take: a refused handshake must fail, not hang.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// A certificate and its key, in PEM, with the certificate's DER for fingerprints.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// The certificates of one test, and the server's files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    /// Signed by the CA the engine trusts for tills.
    till: Leaf,
    /// Signed by another CA: valid-looking, but not one of ours.
    stranger: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let ca = certificate_authority("Loyalty test CA");
        let other_ca = certificate_authority("Someone else's CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let server = leaf(&ca, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write a certificate file");
        write("server.pem", &server.cert_pem);
        write("server.key", &server.key_pem);
        write("tills-ca.pem", &ca.pem());
        let till = leaf(&ca, &["till-1.store-1.shop.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = leaf(&other_ca, &["till-1.store-1.shop.test"], ExtendedKeyUsagePurpose::ClientAuth);
        Pki { ca_pem: ca.pem(), dir, till, stranger }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The engine's `[tls]` section for these files.
    fn section(&self, client_auth: ClientAuth) -> TlsConfig {
        TlsConfig {
            cert_file: Some(self.path("server.pem")),
            key_file: Some(self.path("server.key")),
            client_ca_file: (client_auth != ClientAuth::None).then(|| self.path("tills-ca.pem")),
            client_auth,
        }
    }

    /// A client that trusts the CA, presenting `cert` if given.
    fn client(&self, cert: Option<&Leaf>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).domain_name("localhost");
        match cert {
            Some(cert) => config.identity(cert.identity()),
            None => config,
        }
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate")
}

/// A certificate for `names` signed by `issuer`, with its private key.
fn leaf(issuer: &Issuer<'_, KeyPair>, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
    let mut params = CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>()).expect("names");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("signed certificate");
    Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
}

async fn tls_server(pki: &Pki, client_auth: ClientAuth) -> TestServer {
    let section = pki.section(client_auth);
    TestServer::start_with(|config| config.tls = section, |store| store).await
}

/// A channel to `addr`: TLS with `tls`, else plaintext.
async fn channel(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).expect("uri").connect_timeout(CALL_LIMIT).timeout(CALL_LIMIT);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("client TLS settings");
    }
    endpoint.connect().await.map_err(|error| format!("connect: {error:?}"))
}

/// Connects and asks the health service; Err says where it failed. A server that answers but is
/// not serving is a test failure, not a refused connection.
async fn health_check(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let mut health = HealthClient::new(channel(addr, tls).await?);
    let response = health.check(HealthCheckRequest { service: String::new() }).await.map_err(|status| format!("call: {status:?}"))?;
    assert_eq!(response.into_inner().status, ServingStatus::Serving as i32, "the engine answers but is not serving");
    Ok(())
}

/// Asserts that a checkout call went through TLS to the handler: no such customer, or (once
/// checkout needs API keys) no key.
async fn assert_reaches_the_handler(addr: SocketAddr, tls: ClientTlsConfig) {
    let mut client = LoyaltyServiceClient::new(channel(addr, Some(tls)).await.expect("TLS connection"));
    let status = client.get_account(get_account(card("00000000404"))).await.expect_err("an unknown customer");
    assert!(matches!(status.code(), Code::NotFound | Code::Unauthenticated), "{status:?}");
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_refuses_plaintext() {
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::None).await;
    health_check(server.addr, Some(pki.client(None))).await.expect("TLS client with the CA");
    assert_reaches_the_handler(server.addr, pki.client(None)).await;
    let plaintext = health_check(server.addr, None).await;
    assert!(plaintext.is_err(), "a plaintext client was served: {plaintext:?}");
    server.stop().await;
}

#[tokio::test]
async fn tls_client_that_does_not_trust_the_server_is_refused() {
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::None).await;
    // Trusts only the other CA's world: the server's certificate does not verify.
    let other = Pki::new();
    let refused = health_check(server.addr, Some(other.client(None))).await;
    assert!(refused.is_err(), "the server's certificate verified against the wrong CA: {refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn client_auth_required_accepts_only_certificates_from_the_tills_ca() {
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::Required).await;
    let without = health_check(server.addr, Some(pki.client(None))).await;
    assert!(without.is_err(), "served without a client certificate: {without:?}");
    let stranger = health_check(server.addr, Some(pki.client(Some(&pki.stranger)))).await;
    assert!(stranger.is_err(), "served a certificate from another CA: {stranger:?}");
    health_check(server.addr, Some(pki.client(Some(&pki.till)))).await.expect("the till's certificate");
    assert_reaches_the_handler(server.addr, pki.client(Some(&pki.till))).await;
    server.stop().await;
}

#[tokio::test]
async fn client_auth_optional_serves_tills_without_a_certificate_and_verifies_presented_ones() {
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::Optional).await;
    health_check(server.addr, Some(pki.client(None))).await.expect("no client certificate");
    health_check(server.addr, Some(pki.client(Some(&pki.till)))).await.expect("the till's certificate");
    assert_reaches_the_handler(server.addr, pki.client(None)).await;
    let stranger = health_check(server.addr, Some(pki.client(Some(&pki.stranger)))).await;
    assert!(stranger.is_err(), "a presented certificate from another CA was accepted: {stranger:?}");
    server.stop().await;
}

/// A health server whose interceptor records `client_cert_fingerprint` of every call, on the
/// engine's own TLS settings (or plaintext): the way an authenticating layer will read it.
struct FingerprintServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl FingerprintServer {
    async fn start(tls: Option<ServerTlsConfig>) -> FingerprintServer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let seen = Arc::clone(&seen);
            move |request: tonic::Request<()>| {
                seen.lock().expect("lock").push(client_cert_fingerprint(&request));
                Ok(request)
            }
        };
        let (_reporter, health) = tonic_health::server::health_reporter();
        let service = tonic::service::interceptor::InterceptedService::new(health, record);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut builder = match tls {
            Some(tls) => tonic::transport::Server::builder().tls_config(tls).expect("server TLS settings"),
            None => tonic::transport::Server::builder(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.await;
        }));
        FingerprintServer { addr, seen, stop, task }
    }

    fn take_seen(&self) -> Vec<Option<String>> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn sha256_hex(der: &[u8]) -> String {
    sha2::Sha256::digest(der).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn client_cert_fingerprint_is_the_sha256_of_the_presented_certificate() {
    let pki = Pki::new();
    let tls = pki.section(ClientAuth::Optional).server_config().expect("TLS files load").expect("TLS on");
    let server = FingerprintServer::start(Some(tls)).await;

    health_check(server.addr, Some(pki.client(Some(&pki.till)))).await.expect("the till's certificate");
    let expected = sha256_hex(&pki.till.der);
    assert_eq!(server.take_seen(), [Some(expected.clone())]);
    assert_eq!(expected.len(), 64);

    health_check(server.addr, Some(pki.client(None))).await.expect("no client certificate");
    assert_eq!(server.take_seen(), [None], "no certificate presented, no fingerprint");
    server.stop().await;

    let plaintext = FingerprintServer::start(None).await;
    health_check(plaintext.addr, None).await.expect("plaintext");
    assert_eq!(plaintext.take_seen(), [None], "no TLS, no fingerprint");
    plaintext.stop().await;
}

/// Writes an engine config file with the `[tls]` section for `pki`.
fn config_file(pki: &Pki, client_auth: ClientAuth, cert_file: &std::path::Path) -> PathBuf {
    let text = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nclient_auth = {:?}\n",
        cert_file,
        pki.path("server.key"),
        pki.path("tills-ca.pem"),
        client_auth.as_str(),
    );
    let path = pki.path("loyalty.toml");
    std::fs::write(&path, text).expect("write the config file");
    path
}

#[tokio::test]
async fn engine_binary_serves_mutual_tls_from_its_config_file() {
    let pki = Pki::new();
    let config = config_file(&pki, ClientAuth::Required, &pki.path("server.pem"));
    let data = tempfile::tempdir().expect("temp dir");
    let args = [OsStr::new("--config"), config.as_os_str(), OsStr::new("--data-dir"), data.path().as_os_str()];
    let (mut child, addr) = crate::spawn_engine(args).await;
    health_check(addr, Some(pki.client(Some(&pki.till)))).await.expect("the till's certificate");
    let without = health_check(addr, Some(pki.client(None))).await;
    assert!(without.is_err(), "the binary served a client without a certificate: {without:?}");
    child.kill().await.expect("stop the engine");
}

#[tokio::test]
async fn engine_binary_refuses_to_start_naming_a_missing_certificate_file() {
    let pki = Pki::new();
    let missing = pki.path("no-such-server.pem");
    let config = config_file(&pki, ClientAuth::Optional, &missing);
    let data = tempfile::tempdir().expect("temp dir");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalty-engine-under-test"))
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off", "--log", "warn"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the engine exits in time")
    .expect("run the engine");
    assert!(!output.status.success(), "the engine started without its certificate file");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}: cannot read", missing.display())), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening on"), "it listened");
}
