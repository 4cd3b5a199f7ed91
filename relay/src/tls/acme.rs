//! The ACME client (RFC 8555): account, order, HTTP-01 challenges, certificate, files. The
//! protocol is instant-acme's; this module adds the HTTPS client, the files and the HTTP-01
//! side, which publishes each key authorization in [`Challenges`] for the HTTP port to answer
//! at `/.well-known/acme-challenge/<token>` (RFC 8555 §8.3).
//!
//! # Files (`<data_dir>/acme/`, directory `0700`, files `0600`)
//! | file | content |
//! |---|---|
//! | `account.json` | `{"directory": <acme_directory>, "credentials": <instant-acme AccountCredentials>}`: the account URL (`credentials.id`) and its private key (PKCS#8). A different `acme_directory` makes a new account. |
//! | `certificate.pem` | the issued chain (end entity first) followed by its private key, written atomically (temporary file, fsync, rename), so a crash never leaves a key beside a certificate it does not belong to |
//!
//! After `relay serve` dropped root these files are written by the relay's user, which owns the
//! data directory.
//!
//! # The HTTPS client
//! HTTP/1.1 over rustls (ring), trusting the system's roots (`/etc/ssl/certs` via
//! rustls-native-certs) plus `acme_ca_file` (a test CA such as Pebble's). Every request has a
//! deadline ([`REQUEST_TIMEOUT`]): an ACME server that accepts and never answers is a failure
//! like any other, retried by the schedule.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use super::Certificate;
use crate::config::Config;
use crate::http::Challenges;

/// Deadline of one HTTP request to the ACME server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the ACME server may take to validate the challenges and to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);

const ACCOUNT_FILE: &str = "account.json";
const CERT_FILE: &str = "certificate.pem";

/// An issuance failure: the step and what went wrong (the ACME server's problem document when
/// it sent one).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct Error {
    /// What was being done.
    pub step: &'static str,
    /// Why it failed.
    pub detail: String,
}

fn fail(step: &'static str) -> impl FnOnce(instant_acme::Error) -> Error {
    move |e| Error {
        step,
        detail: with_sources(&e),
    }
}

/// An error's text followed by its causes' (hyper's "client error (Connect)" alone says little).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The directory of the ACME files.
pub fn dir(config: &Config) -> PathBuf {
    config.data_dir.join("acme")
}

/// The saved ACME certificate, if there is one that parses (with its key).
pub fn saved(config: &Config) -> Option<Certificate> {
    saved_in(&dir(config))
}

fn saved_in(dir: &Path) -> Option<Certificate> {
    let path = dir.join(CERT_FILE);
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "ACME certificate unreadable: {e}");
            return None;
        }
    };
    match Certificate::from_pem(&pem, &pem) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ACME certificate unusable: {e}");
            None
        }
    }
}

/// The account URL of the saved ACME account (for the CAA record's `accounturi`), if any.
pub fn account_url(config: &Config) -> Option<String> {
    let text = std::fs::read_to_string(dir(config).join(ACCOUNT_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["credentials"]["id"].as_str().map(str::to_owned)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Issues certificates for the relay's names from `acme_directory`.
pub struct Client {
    directory: String,
    ca_file: Option<PathBuf>,
    email: String,
    names: Vec<String>,
    dir: PathBuf,
    challenges: Challenges,
}

impl Client {
    /// A client for `config` publishing its HTTP-01 answers in `challenges`.
    pub fn new(config: &Config, challenges: Challenges) -> Client {
        Client {
            directory: config.acme_directory.clone(),
            ca_file: config.acme_ca_file.clone(),
            email: config.acme_email.clone(),
            names: super::names(config),
            dir: dir(config),
            challenges,
        }
    }

    /// The certificate saved by the last issuance, if usable.
    pub fn saved(&self) -> Option<Certificate> {
        saved_in(&self.dir)
    }

    /// The names certificates are asked for.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Orders a certificate for the names, answers the HTTP-01 challenges, and saves and returns
    /// the certificate.
    ///
    /// # Errors
    /// Any failing step, named (network, the server's problem documents, a challenge the server
    /// could not validate with the reason it gave, files).
    pub async fn issue(&self) -> Result<Certificate, Error> {
        crate::privilege::private_dir(&self.dir).map_err(|e| Error {
            step: "creating the ACME directory",
            detail: format!("{}: {e}", self.dir.display()),
        })?;
        let account = self.account().await?;
        let ids: Vec<Identifier> = self
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(fail("new order"))?;
        let mut published = Published {
            challenges: &self.challenges,
            tokens: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(fail("fetching an authorization"))?;
            let id = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(Error {
                        step: "authorization",
                        detail: format!("{id} is {other:?}"),
                    })
                }
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| Error {
                    step: "authorization",
                    detail: format!("no http-01 challenge offered for {id}"),
                })?;
            let key_authorization = challenge.key_authorization();
            published.publish(&challenge.token, key_authorization.as_str());
            challenge
                .set_ready()
                .await
                .map_err(fail("answering a challenge"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(POLL_TIMEOUT))
            .await
            .map_err(fail("waiting for validation"))?;
        if status != OrderStatus::Ready {
            return Err(Error {
                step: "validation",
                detail: format!("order {status:?}: {}", challenge_errors(&mut order).await),
            });
        }
        drop(published);
        let key = rcgen::KeyPair::generate().map_err(|e| Error {
            step: "making the key",
            detail: e.to_string(),
        })?;
        let csr = rcgen::CertificateParams::new(self.names.clone())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| Error {
                step: "making the CSR",
                detail: e.to_string(),
            })?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(fail("finalizing the order"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(POLL_TIMEOUT))
            .await
            .map_err(fail("downloading the certificate"))?;
        let key_pem = key.serialize_pem();
        let cert = Certificate::from_pem(&chain, &key_pem).map_err(|e| Error {
            step: "checking the certificate",
            detail: e.to_string(),
        })?;
        let path = self.dir.join(CERT_FILE);
        super::write_private(&path, format!("{}{key_pem}", cert.pem()).as_bytes()).map_err(
            |e| Error {
                step: "saving the certificate",
                detail: e.to_string(),
            },
        )?;
        Ok(cert)
    }

    /// The saved account for this directory, or a new one (saved).
    async fn account(&self) -> Result<Account, Error> {
        let path = self.dir.join(ACCOUNT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<SavedAccount>(&text) {
                Ok(saved) if saved.directory == self.directory => {
                    return Account::builder_with_http(self.http()?)
                        .from_credentials(saved.credentials)
                        .await
                        .map_err(fail("loading the account"));
                }
                Ok(_) => tracing::info!(
                    "ACME: acme_directory changed; making an account at {}",
                    self.directory
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "ACME: account file unusable ({e}); making a new account"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error {
                    step: "reading the account",
                    detail: format!("{}: {e}", path.display()),
                })
            }
        }
        let contact = format!("mailto:{}", self.email);
        let contacts: Vec<&str> = if self.email.is_empty() {
            Vec::new()
        } else {
            vec![contact.as_str()]
        };
        let (account, credentials) = Account::builder_with_http(self.http()?)
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await
            .map_err(fail("creating the account"))?;
        let saved = serde_json::to_vec_pretty(&SavedAccount {
            directory: self.directory.clone(),
            credentials,
        })
        .map_err(|e| Error {
            step: "saving the account",
            detail: e.to_string(),
        })?;
        super::write_private(&path, &saved).map_err(|e| Error {
            step: "saving the account",
            detail: e.to_string(),
        })?;
        tracing::info!(account = account.id(), "ACME: account created");
        Ok(account)
    }

    fn http(&self) -> Result<Box<dyn HttpClient>, Error> {
        Ok(Box::new(Https::new(self.ca_file.as_deref())?))
    }
}

/// The errors the server gave for the challenges of a failed order.
async fn challenge_errors(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    if let Some(p) = &order.state().error {
        out.push(p.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                out.push(format!("{}: {p}", authz.identifier()));
            }
        }
    }
    if out.is_empty() {
        "no reason given".to_owned()
    } else {
        out.join("; ")
    }
}

/// Key authorizations published for the HTTP port; withdrawn when dropped, whatever the outcome.
struct Published<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
}

impl Published<'_> {
    fn publish(&mut self, token: &str, key_authorization: &str) {
        self.challenges.insert(token, key_authorization);
        self.tokens.push(token.to_owned());
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.challenges.remove(t);
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The HTTPS client of the ACME requests (see the module docs).
struct Https(hyper_util::client::legacy::Client<Connector, BodyWrapper<Bytes>>);

impl Https {
    fn new(ca_file: Option<&Path>) -> Result<Https, Error> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        if let Some(e) = native.errors.first() {
            tracing::debug!("ACME: some system CA certificates unreadable: {e}");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let err = |detail: String| Error {
                step: "reading acme_ca_file",
                detail: format!("{}: {detail}", path.display()),
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| err(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error {
            step: "TLS client",
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(Https(client))
    }
}

impl HttpClient for Https {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Str("no answer within the deadline")),
            }
        })
    }
}
