//! Routing and pages: one plain function from a request (body already read, within
//! [`body_cap`]) to a response, over [`Shared`]. No sockets, clock or files: time, the peer and a
//! random source are passed in, `www_folder` files come through [`Files`].
//!
//! Routes (the reference's nginx configuration, chatmail.md §1.5):
//! - `www.<domain>`: `301` to `https://<domain><path>`.
//! - `/.well-known/autoconfig/mail/config-v1.1.xml` (and `/mail/config-v1.1.xml`, the URL cores
//!   try first on `autoconfig.<domain>`), `/.well-known/mta-sts.txt`.
//! - `/new`, `/cgi-bin/newemail.py`: fresh credentials (never an account), per-source limited
//!   (`429`); `GET` redirects to `dcaccount:` unless the certificate is self-signed.
//! - `/mxdeliv`: `405` but for `POST`, which the connection driver answers (see
//!   [`super::mxdeliv`]).
//! - Static pages: `www_folder` files first, then the built-in `index.html`, `info.html`,
//!   `privacy.html`, `robots.txt`.
//!
//! On the plain-HTTP listener only `/.well-known/acme-challenge/<token>` is answered (from
//! [`Shared::acme_challenges`]); everything else is `301` to HTTPS.

use std::net::IpAddr;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;

use super::onboarding::{self, xml_escape as esc};
use crate::config::Config;
use crate::shared::Shared;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `https_port` (after ALPN chose HTTP).
    Https,
    /// `http_port`: redirects and ACME HTTP-01.
    Http,
}

/// Files of `www_folder` (the I/O side reads them; tests give a map).
pub trait Files {
    /// Whether the website is served at all (a configured `www_folder` that does not exist turns
    /// it off, as the reference; the endpoints stay).
    fn site_enabled(&self) -> bool;
    /// The file at `rel` (a sanitized relative path, see [`www_path`]), if it exists.
    fn get(&self, rel: &str) -> Option<Vec<u8>>;
}

/// No `www_folder`: the built-in pages only.
pub struct BuiltinOnly;

impl Files for BuiltinOnly {
    fn site_enabled(&self) -> bool {
        true
    }
    fn get(&self, _rel: &str) -> Option<Vec<u8>> {
        None
    }
}

/// Largest request body a route reads; a longer one gets `413` ([`too_large`]) before it is read.
pub fn body_cap(method: &Method, path: &str, config: &Config) -> usize {
    match (method, path) {
        // The reference's newemail.py reads nothing; a client may send a small form.
        (&Method::POST, "/new" | "/cgi-bin/newemail.py") => 1024,
        // A whole message from another relay (chatmail.md §3.7).
        (&Method::POST, "/mxdeliv") => {
            usize::try_from(config.max_message_size).unwrap_or(usize::MAX)
        }
        _ => 0,
    }
}

/// The `413` answer for a body over [`body_cap`]: on `/mxdeliv` with the SMTP reply text, as the
/// reference's receiver.
pub fn too_large(path: &str) -> Response<Bytes> {
    if path == "/mxdeliv" {
        respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain; charset=utf-8",
            "552 Message exceeds maximum size\n",
        )
    } else {
        text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n")
    }
}

/// A plain-text answer with `status`.
pub fn status_text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    text(status, body)
}

/// A response with a body and its content type.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Bytes> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn redirect(location: &str) -> Response<Bytes> {
    let mut r = text(StatusCode::MOVED_PERMANENTLY, "Moved Permanently\n");
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "Bad Request\n"),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The requested host name, lower case, without port (`Host` header, else the URI's authority).
fn host_of(req: &Request<Bytes>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or("")
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// `https://<authority>` for a redirect: the host the client asked for if it is one of ours
/// (the domain or its `www.`, `mta-sts.`, `autoconfig.` names), else the domain; the HTTPS port
/// unless 443.
fn https_base(config: &Config, host: Option<&str>) -> String {
    let d = config.mail_domain.to_ascii_lowercase();
    let ours = host.filter(|h| {
        *h == d
            || ["www.", "mta-sts.", "autoconfig."]
                .iter()
                .any(|p| h.strip_prefix(p) == Some(&d))
    });
    let name = ours.unwrap_or(&d);
    match config.ports.https {
        443 | 0 => format!("https://{name}"),
        p => format!("https://{name}:{p}"),
    }
}

/// The path and query to keep in a redirect: those of an origin-form target (`/...`); `/` for
/// the asterisk form (`OPTIONS *`), which would otherwise run into the host name of the
/// `Location`.
fn path_and_query(req: &Request<Bytes>) -> &str {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/")
}

/// Answers one request. `now_ms` and `peer` are for the `/new` limiter, `rng` makes credentials.
pub fn handle(
    shared: &Shared,
    files: &dyn Files,
    listener: Listener,
    req: &Request<Bytes>,
    peer: IpAddr,
    now_ms: u64,
    rng: &mut impl Rng,
) -> Response<Bytes> {
    let config = &shared.config;
    let host = host_of(req);
    let path = req.uri().path();
    if listener == Listener::Http {
        if let Some(token) = path.strip_prefix("/.well-known/acme-challenge/") {
            if !matches!(*req.method(), Method::GET | Method::HEAD) {
                return method_not_allowed("GET, HEAD");
            }
            return match shared.acme_challenges.get(token) {
                Some(key_auth) => respond(StatusCode::OK, "text/plain", key_auth),
                None => text(StatusCode::NOT_FOUND, "Not Found\n"),
            };
        }
        return redirect(&format!(
            "{}{}",
            https_base(config, host.as_deref()),
            path_and_query(req)
        ));
    }
    if let Some(h) = &host {
        if h.strip_prefix("www.") == Some(&config.mail_domain.to_ascii_lowercase()) {
            return redirect(&format!(
                "{}{}",
                https_base(config, None),
                path_and_query(req)
            ));
        }
    }
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path {
        "/.well-known/autoconfig/mail/config-v1.1.xml" | "/mail/config-v1.1.xml" => {
            if !get {
                return method_not_allowed("GET, HEAD");
            }
            respond(
                StatusCode::OK,
                "application/xml; charset=utf-8",
                onboarding::autoconfig_xml(config),
            )
        }
        "/.well-known/mta-sts.txt" => {
            if !get {
                return method_not_allowed("GET, HEAD");
            }
            respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                onboarding::mta_sts(config),
            )
        }
        "/new" | "/cgi-bin/newemail.py" => {
            let self_signed = onboarding::self_signed(config);
            match *req.method() {
                Method::POST => {}
                Method::GET | Method::HEAD if self_signed => {}
                // With a real certificate a browser is sent to Delta Chat, which POSTs.
                Method::GET | Method::HEAD => return redirect(&onboarding::dcaccount_url(config)),
                _ => return method_not_allowed("GET, HEAD, POST"),
            }
            let allowed = shared
                .new_limiter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .allow(peer, now_ms);
            if !allowed {
                let mut r = text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            let mut r = respond(
                StatusCode::OK,
                "application/json",
                onboarding::new_account_json(config, rng),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        // Relay-to-relay delivery over HTTPS (chatmail.md §3.7): `POST` is answered by the
        // connection driver (`conn.rs`, it needs the store and DNS); anything else is 405.
        "/mxdeliv" => method_not_allowed("POST"),
        _ => {
            if !get {
                return method_not_allowed("GET, HEAD");
            }
            static_page(config, files, path, rng)
        }
    }
}

/// The relative path of a static file for URL path `path`: percent-decoded, `index.html` for a
/// directory; `None` for anything that could leave the folder (`..`, `.`, empty segments,
/// backslashes, NUL) or is not valid UTF-8.
pub fn www_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let decoded = percent_decode(rest)?;
    let mut rel = decoded;
    if rel.is_empty() || rel.ends_with('/') {
        rel.push_str("index.html");
    }
    let ok = rel
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains(['\\', '\0']));
    ok.then_some(rel)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Content type by file extension.
pub fn content_type(rel: &str) -> &'static str {
    let ext = rel.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn static_page(
    config: &Config,
    files: &dyn Files,
    path: &str,
    rng: &mut impl Rng,
) -> Response<Bytes> {
    let not_found = || text(StatusCode::NOT_FOUND, "Not Found\n");
    let Some(rel) = www_path(path) else {
        return text(StatusCode::BAD_REQUEST, "Bad Request\n");
    };
    if !files.site_enabled() {
        return not_found();
    }
    if let Some(body) = files.get(&rel) {
        return respond(StatusCode::OK, content_type(&rel), body);
    }
    let html = |body: String| respond(StatusCode::OK, "text/html; charset=utf-8", body);
    match rel.as_str() {
        "index.html" => {
            let mut r = html(index_html(config, rng));
            if onboarding::self_signed(config) {
                // Each view shows fresh credentials.
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            r
        }
        "info.html" => html(info_html(config)),
        "privacy.html" => html(privacy_html(config)),
        "robots.txt" => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "User-agent: *\nDisallow: /\n",
        ),
        _ => not_found(),
    }
}

/// 0 to 12 in English words, larger numbers in digits (the reference's pages do the same).
pub fn spell(n: u64) -> String {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    WORDS
        .get(n as usize)
        .map_or_else(|| n.to_string(), |w| (*w).to_owned())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", spell(n), if n == 1 { one } else { many })
}

fn megabytes(bytes: u64) -> String {
    format!("{} MB", bytes / (1024 * 1024))
}

fn layout(config: &Config, title: &str, body: &str) -> String {
    let d = esc(&config.mail_domain);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · {d}</title>\n<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;\
         padding:0 1em;line-height:1.5}}.button{{display:inline-block;padding:.6em 1.2em;background:#2a6ed6;\
         color:#fff;border-radius:.4em;text-decoration:none}}.qr svg{{width:16em;height:16em}}code{{word-break:break-all}}</style>\n\
         </head>\n<body>\n{body}\n<footer><p><a href=\"/\">{d}</a> · <a href=\"/info.html\">info</a> · \
         <a href=\"/privacy.html\">privacy</a></p></footer>\n</body>\n</html>\n"
    )
}

/// The index page: the "get a profile" link and its QR code (`DCACCOUNT:https://<d>/new`),
/// and the short `dcaccount:<domain>` form; on a self-signed relay a fresh `dclogin:` link
/// (what the reference's `dclogin.js` shows), since cores refuse the certificate for `/new`.
pub fn index_html(config: &Config, rng: &mut impl Rng) -> String {
    let d = esc(&config.mail_domain);
    let invite = onboarding::dcaccount_url(config);
    // Upper case scheme: what the reference puts in its links and QR codes.
    let invite_upper = invite.replacen("dcaccount:", "DCACCOUNT:", 1);
    let short = onboarding::dcaccount_short(config);
    let mut body = format!(
        "<h1>{d}</h1>\n<p>A chatmail relay for <a href=\"https://delta.chat\">Delta Chat</a>: \
        an address in a second, end-to-end encrypted messages only.</p>\n"
    );
    if onboarding::self_signed(config) {
        let (email, password) = onboarding::new_credentials(config, rng);
        let url = onboarding::dclogin_url(
            &email,
            &password,
            &config.mail_domain,
            config.ports.imaps,
            config.ports.submissions,
        );
        body.push_str(&format!(
            "<p><a class=\"button\" href=\"{u}\">Get a {d} chat profile</a></p>\n\
             <p>Or scan this code with Delta Chat (this relay's certificate is self-signed; the link \
             accepts it):</p>\n<div class=\"qr\">{qr}</div>\n<p><code>{u}</code></p>\n",
            u = esc(&url),
            qr = onboarding::qr_svg(&url, 320),
        ));
        body.push_str(&format!(
            "<p>Invite link: <a href=\"{i}\">{i}</a></p>\n",
            i = esc(&invite)
        ));
    } else {
        body.push_str(&format!(
            "<p><a class=\"button\" href=\"{i}\">Get a {d} chat profile</a></p>\n\
             <p>Or scan this code with Delta Chat:</p>\n<div class=\"qr\">{qr}</div>\n\
             <p><code>{i}</code></p>\n",
            i = esc(&invite_upper),
            qr = onboarding::qr_svg(&invite_upper, 320),
        ));
    }
    body.push_str(&format!(
        "<p>Newer Delta Chat versions also accept <a href=\"{s}\"><code>{s}</code></a>.</p>\n",
        s = esc(&short)
    ));
    layout(config, "Get a chat profile", &body)
}

/// `info.html`: the relay's real limits (from the configuration) and its contact.
pub fn info_html(config: &Config) -> String {
    let d = esc(&config.mail_domain);
    let mut body = format!(
        "<h1>About {d}</h1>\n<ul>\n\
         <li>You may send {per_min} a minute (bursts of {burst}).</li>\n\
         <li>Your mailbox holds up to {mailbox}; a message may be up to {msg}.</li>\n\
         <li>Messages are deleted from the relay after {days}, large ones (over 200 KB) after \
         {large}, even if no device fetched them.</li>\n\
         <li>A profile that does not log in for {inactive} is deleted with its messages.</li>\n\
         <li>Only end-to-end encrypted messages are accepted (and Secure-Join requests).</li>\n</ul>\n",
        per_min = plural(u64::from(config.max_user_send_per_minute), "message", "messages"),
        burst = spell(u64::from(config.max_user_send_burst_size)),
        mailbox = megabytes(config.max_mailbox_size),
        msg = megabytes(config.max_message_size),
        days = plural(u64::from(config.delete_mails_after), "day", "days"),
        large = plural(u64::from(config.delete_large_after), "day", "days"),
        inactive = plural(u64::from(config.delete_inactive_users_after), "day", "days"),
    );
    if !config.privacy_mail.is_empty() {
        let m = esc(&config.privacy_mail);
        body.push_str(&format!("<p>Contact: <a href=\"mailto:{m}\">{m}</a></p>\n"));
    }
    layout(config, "Info", &body)
}

/// `privacy.html`: the operator's details from `privacy_postal`, `privacy_mail`, `privacy_pdo`,
/// `privacy_supervisor`, and the retention from `delete_*_after`.
pub fn privacy_html(config: &Config) -> String {
    let d = esc(&config.mail_domain);
    let extra = |k: &str| {
        config
            .extra
            .get(k)
            .map(|v| esc(v.trim()))
            .filter(|v| !v.is_empty())
    };
    let mut body = format!("<h1>Privacy policy of {d}</h1>\n");
    if let Some(postal) = extra("privacy_postal") {
        body.push_str(&format!(
            "<h2>Who runs this relay</h2>\n<p>{}</p>\n",
            postal.replace('\n', "<br>")
        ));
    }
    if !config.privacy_mail.is_empty() {
        let m = esc(&config.privacy_mail);
        body.push_str(&format!("<p>E-mail: <a href=\"mailto:{m}\">{m}</a></p>\n"));
    }
    if let Some(pdo) = extra("privacy_pdo") {
        body.push_str(&format!("<h2>Data protection officer</h2>\n<p>{pdo}</p>\n"));
    }
    body.push_str(&format!(
        "<h2>What is stored</h2>\n<p>Your address, a hash of your password and the day of your last \
         login. Messages, which are end-to-end encrypted, are kept until a device fetched and deleted \
         them, at most {days}. A profile without a login for {inactive} is deleted. The relay does \
         not write your IP address into messages or keep it in its store.</p>\n",
        days = plural(u64::from(config.delete_mails_after), "day", "days"),
        inactive = plural(u64::from(config.delete_inactive_users_after), "day", "days"),
    ));
    if let Some(sup) = extra("privacy_supervisor") {
        body.push_str(&format!(
            "<h2>Supervisory authority</h2>\n<p>You may complain to: {sup}</p>\n"
        ));
    }
    layout(config, "Privacy", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, RawConfig};
    use rand::SeedableRng;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn shared(kv: &[&str]) -> Shared {
        shared_and_store(kv).0
    }

    fn shared_and_store(kv: &[&str]) -> (Shared, Arc<crate::store::MemoryStore>) {
        let mut raw = RawConfig::default();
        for s in kv {
            raw.set(s).unwrap();
        }
        let config = Config::build(
            &raw,
            Mode::Dev {
                data_dir: "/nonexistent".into(),
            },
        )
        .unwrap();
        let store = Arc::new(crate::store::MemoryStore::new(
            &crate::store::StoreConfig::default(),
        ));
        (Shared::new(config, store.clone()), store)
    }

    struct Map(HashMap<&'static str, &'static str>, bool);

    impl Files for Map {
        fn site_enabled(&self) -> bool {
            self.1
        }
        fn get(&self, rel: &str) -> Option<Vec<u8>> {
            self.0.get(rel).map(|s| s.as_bytes().to_vec())
        }
    }

    fn req(method: Method, host: &str, path: &str) -> Request<Bytes> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(Bytes::new())
            .unwrap()
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn get(s: &Shared, files: &dyn Files, l: Listener, host: &str, path: &str) -> Response<Bytes> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        handle(
            s,
            files,
            l,
            &req(Method::GET, host, path),
            PEER,
            0,
            &mut rng,
        )
    }

    fn body(r: &Response<Bytes>) -> &str {
        std::str::from_utf8(r.body()).unwrap()
    }

    fn location(r: &Response<Bytes>) -> &str {
        r.headers()[header::LOCATION].to_str().unwrap()
    }

    #[test]
    fn http_listener_redirects_and_answers_acme_challenges() {
        let s = shared(&["mail_domain=chat.example.org"]);
        let r = get(
            &s,
            &BuiltinOnly,
            Listener::Http,
            "chat.example.org:10080",
            "/info.html?x=1",
        );
        assert_eq!(r.status(), 301);
        assert_eq!(location(&r), "https://chat.example.org:10443/info.html?x=1");
        let r = get(
            &s,
            &BuiltinOnly,
            Listener::Http,
            "www.chat.example.org",
            "/",
        );
        assert_eq!(location(&r), "https://www.chat.example.org:10443/");
        let r = get(&s, &BuiltinOnly, Listener::Http, "evil.example", "/");
        assert_eq!(location(&r), "https://chat.example.org:10443/");
        let path = "/.well-known/acme-challenge/tok_EN-1";
        assert_eq!(
            get(&s, &BuiltinOnly, Listener::Http, "chat.example.org", path).status(),
            404
        );
        s.acme_challenges.insert("tok_EN-1", "tok_EN-1.thumbprint");
        let r = get(&s, &BuiltinOnly, Listener::Http, "chat.example.org", path);
        assert_eq!(
            (r.status().as_u16(), body(&r)),
            (200, "tok_EN-1.thumbprint")
        );
        s.acme_challenges.remove("tok_EN-1");
        assert_eq!(
            get(&s, &BuiltinOnly, Listener::Http, "chat.example.org", path).status(),
            404
        );
    }

    #[test]
    fn asterisk_form_redirects_to_the_root() {
        // `OPTIONS * HTTP/1.1` (found by the http_site fuzz target): the redirect used to be
        // `https://chat.example.org:10443*`.
        let s = shared(&["mail_domain=chat.example.org"]);
        let star = |host: &str, l: Listener| {
            let req = Request::builder()
                .method(Method::OPTIONS)
                .uri("*")
                .header("host", host)
                .body(Bytes::new())
                .unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            handle(&s, &BuiltinOnly, l, &req, PEER, 0, &mut rng)
        };
        let r = star("chat.example.org", Listener::Http);
        assert_eq!(r.status(), 301);
        assert_eq!(location(&r), "https://chat.example.org:10443/");
        let r = star("www.chat.example.org", Listener::Https);
        assert_eq!(location(&r), "https://chat.example.org:10443/");
    }

    #[test]
    fn www_redirects_to_the_domain() {
        let s = shared(&["mail_domain=chat.example.org", "https_port=443"]);
        let r = get(
            &s,
            &BuiltinOnly,
            Listener::Https,
            "WWW.chat.example.org",
            "/privacy.html",
        );
        assert_eq!(r.status(), 301);
        assert_eq!(location(&r), "https://chat.example.org/privacy.html");
    }

    #[test]
    fn autoconfig_and_mta_sts_on_every_host_name() {
        let s = shared(&["mail_domain=chat.example.org"]);
        for (host, path) in [
            (
                "chat.example.org",
                "/.well-known/autoconfig/mail/config-v1.1.xml",
            ),
            ("autoconfig.chat.example.org", "/mail/config-v1.1.xml"),
        ] {
            let r = get(&s, &BuiltinOnly, Listener::Https, host, path);
            assert_eq!(r.status(), 200);
            assert!(body(&r).contains("<clientConfig"), "{host}{path}");
        }
        let r = get(
            &s,
            &BuiltinOnly,
            Listener::Https,
            "mta-sts.chat.example.org",
            "/.well-known/mta-sts.txt",
        );
        assert!(body(&r).starts_with("version: STSv1\n"));
    }

    #[test]
    fn new_never_creates_and_get_redirects_with_a_real_certificate() {
        let (real, store) = shared_and_store(&[
            "mail_domain=chat.example.org",
            "tls_external_cert_and_key=/c /k",
            "https_port=443",
        ]);
        let r = get(
            &real,
            &BuiltinOnly,
            Listener::Https,
            "chat.example.org",
            "/new",
        );
        assert_eq!(r.status(), 301);
        assert_eq!(location(&r), "dcaccount:https://chat.example.org/new");
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let r = handle(
            &real,
            &BuiltinOnly,
            Listener::Https,
            &req(Method::POST, "chat.example.org", "/cgi-bin/newemail.py"),
            PEER,
            0,
            &mut rng,
        );
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert!(v["email"].as_str().unwrap().ends_with("@chat.example.org"));
        assert_eq!(store.accounts().len(), 0, "no account is created");
        // Self-signed: GET answers like POST.
        let dev = shared(&[]);
        let r = get(&dev, &BuiltinOnly, Listener::Https, "127.0.0.1", "/new");
        assert_eq!(r.status(), 200);
        assert!(body(&r).contains("dclogin_url"));
        let r = handle(
            &dev,
            &BuiltinOnly,
            Listener::Https,
            &req(Method::DELETE, "127.0.0.1", "/new"),
            PEER,
            0,
            &mut rng,
        );
        assert_eq!(r.status(), 405);
    }

    #[test]
    fn new_is_limited_per_source() {
        let s = shared(&[]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let post = req(Method::POST, "127.0.0.1", "/new");
        let codes: Vec<u16> = (0..8)
            .map(|_| {
                handle(
                    &s,
                    &BuiltinOnly,
                    Listener::Https,
                    &post,
                    PEER,
                    5_000,
                    &mut rng,
                )
                .status()
                .as_u16()
            })
            .collect();
        assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
        assert_eq!(
            handle(
                &s,
                &BuiltinOnly,
                Listener::Https,
                &post,
                other,
                5_000,
                &mut rng
            )
            .status(),
            200
        );
        assert_eq!(
            handle(
                &s,
                &BuiltinOnly,
                Listener::Https,
                &post,
                PEER,
                5_500,
                &mut rng
            )
            .status(),
            200
        );
    }

    #[test]
    fn mxdeliv_takes_only_post() {
        let s = shared(&[]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        assert_eq!(
            get(&s, &BuiltinOnly, Listener::Https, "127.0.0.1", "/mxdeliv").status(),
            405
        );
        let r = handle(
            &s,
            &BuiltinOnly,
            Listener::Https,
            &req(Method::POST, "127.0.0.1", "/mxdeliv"),
            PEER,
            0,
            &mut rng,
        );
        assert_eq!(
            r.status(),
            405,
            "POST is the connection driver's (needs the store and DNS)"
        );
    }

    #[test]
    fn pages_show_the_invite_and_the_real_limits() {
        let real = shared(&[
            "mail_domain=chat.example.org",
            "tls_external_cert_and_key=/c /k",
            "max_user_send_per_minute=42",
            "delete_mails_after=3",
            "max_mailbox_size=250M",
            "privacy_mail=admin@example.org",
            "privacy_postal=Jo <Operator>\nMain St 1",
            "privacy_supervisor=The Authority",
        ]);
        let idx = get(
            &real,
            &BuiltinOnly,
            Listener::Https,
            "chat.example.org",
            "/",
        );
        assert_eq!(idx.status(), 200);
        let html = body(&idx);
        assert!(
            html.contains("href=\"DCACCOUNT:https://chat.example.org:10443/new\""),
            "{html}"
        );
        assert!(html.contains("<svg"), "QR code");
        assert!(html.contains("dcaccount:chat.example.org:10443"));
        let info = get(
            &real,
            &BuiltinOnly,
            Listener::Https,
            "chat.example.org",
            "/info.html",
        );
        let html = body(&info);
        assert!(html.contains("42 messages a minute"), "{html}");
        assert!(html.contains("after three days"), "{html}");
        assert!(html.contains("250 MB"), "{html}");
        assert!(html.contains("mailto:admin@example.org"));
        let privacy = get(
            &real,
            &BuiltinOnly,
            Listener::Https,
            "chat.example.org",
            "/privacy.html",
        );
        let html = body(&privacy);
        assert!(html.contains("Jo &lt;Operator&gt;<br>Main St 1"), "{html}");
        assert!(html.contains("The Authority"));
        let robots = get(
            &real,
            &BuiltinOnly,
            Listener::Https,
            "chat.example.org",
            "/robots.txt",
        );
        assert_eq!(body(&robots), "User-agent: *\nDisallow: /\n");
        let dev = shared(&[]);
        let html = body(&get(
            &dev,
            &BuiltinOnly,
            Listener::Https,
            "127.0.0.1",
            "/index.html",
        ))
        .to_owned();
        assert!(html.contains("dclogin:"), "self-signed: a dclogin link");
        assert_eq!(
            get(
                &dev,
                &BuiltinOnly,
                Listener::Https,
                "127.0.0.1",
                "/nope.html"
            )
            .status(),
            404
        );
    }

    #[test]
    fn www_folder_overrides_and_traversal_is_refused() {
        let s = shared(&[]);
        let files = Map(
            HashMap::from([("index.html", "<p>ours</p>"), ("css/site.css", "body{}")]),
            true,
        );
        let r = get(&s, &files, Listener::Https, "127.0.0.1", "/");
        assert_eq!(body(&r), "<p>ours</p>");
        let r = get(&s, &files, Listener::Https, "127.0.0.1", "/css/site.css");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
        // Built-ins still serve what the folder lacks.
        assert_eq!(
            get(&s, &files, Listener::Https, "127.0.0.1", "/info.html").status(),
            200
        );
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/css/..%2f..%2fx",
            "/a//b",
            "/a%5c..",
            "/%00",
            "/%zz",
        ] {
            assert_eq!(www_path(bad), None, "{bad}");
            assert_eq!(
                get(&s, &files, Listener::Https, "127.0.0.1", bad).status(),
                400,
                "{bad}"
            );
        }
        assert_eq!(www_path("/a/b/").as_deref(), Some("a/b/index.html"));
        assert_eq!(www_path("/%C3%A4.html").as_deref(), Some("ä.html"));
        // A www_folder that does not exist: no website, the endpoints stay.
        let off = Map(HashMap::new(), false);
        assert_eq!(
            get(&s, &off, Listener::Https, "127.0.0.1", "/").status(),
            404
        );
        assert_eq!(
            get(
                &s,
                &off,
                Listener::Https,
                "127.0.0.1",
                "/.well-known/mta-sts.txt"
            )
            .status(),
            200
        );
    }

    #[test]
    fn numbers_are_spelled_to_twelve() {
        assert_eq!(spell(0), "zero");
        assert_eq!(spell(12), "twelve");
        assert_eq!(spell(13), "13");
    }
}
