//! What a new user or client is handed: fresh credentials (`/new`), the `dclogin:` and
//! `dcaccount:` links, the Mozilla autoconfig document and the MTA-STS policy. Pure functions of
//! the [`Config`] (and a random source); no I/O.

use rand::Rng;

use crate::config::Config;

/// Localpart alphabet of `/new` (the reference's `newemail.py`).
const USER_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Password alphabet of `/new`: Python's `ascii_letters + digits + punctuation`, as the reference.
const PASSWORD_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\
!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Fresh credentials as the reference's `/new` makes them: `username_max_length` characters of
/// `[a-z0-9]` and a password of `password_min_length + 3` characters. Nothing is created: the
/// account appears at its first login.
pub fn new_credentials(config: &Config, rng: &mut impl Rng) -> (String, String) {
    let pick = |rng: &mut dyn rand::RngCore, set: &[u8], n: usize| {
        (0..n)
            .map(|_| set[rng.gen_range(0..set.len())] as char)
            .collect::<String>()
    };
    let user = pick(rng, USER_ALPHABET, config.username_max_length);
    let password = pick(rng, PASSWORD_ALPHABET, config.password_min_length + 3);
    (format!("{user}@{}", config.address_domain()), password)
}

/// Whether the relay serves a certificate clients cannot check (the reference's `self` TLS mode:
/// an IP literal or a `_`-prefixed domain without `tls_external_cert_and_key`, and `relay dev`).
/// Then `/new` adds a `dclogin_url`, `GET /new` answers like `POST` and the index page shows a
/// `dclogin:` link.
pub fn self_signed(config: &Config) -> bool {
    config.tls_mode == crate::config::TlsMode::SelfSigned
}

/// Every byte but ASCII letters and digits as `%XX`.
fn percent_encode_all(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `dclogin:` URL of an account: full manual settings (the implicit-TLS ports of this relay)
/// and `ic=3` (accept the self-signed certificate). The address keeps `@[]`; the password is
/// fully percent-encoded, as the reference.
pub fn dclogin_url(addr: &str, password: &str, host: &str, imaps: u16, submissions: u16) -> String {
    format!(
        "dclogin:{addr}?p={}&v=1&ih={host}&ip={imaps}&is=ssl&sh={host}&sp={submissions}&ss=ssl&ic=3",
        percent_encode_all(password)
    )
}

/// `host` or `host:port` for URLs naming the HTTPS listener (the port only when it is not 443).
pub fn https_authority(config: &Config) -> String {
    match config.ports.https {
        443 | 0 => config.mail_domain.clone(),
        p => format!("{}:{p}", config.mail_domain),
    }
}

/// The invite link of the index page and its QR code: `dcaccount:https://<host>/new` (Delta
/// Chat POSTs to it and configures from the answer).
pub fn dcaccount_url(config: &Config) -> String {
    format!("dcaccount:https://{}/new", https_authority(config))
}

/// The short form newer cores accept: `dcaccount:<domain>` (the core makes the credentials and
/// configures by autoconfig).
pub fn dcaccount_short(config: &Config) -> String {
    format!("dcaccount:{}", https_authority(config))
}

/// The JSON answer of `/new`: `{"email","password"}`, plus `dclogin_url` on self-signed relays.
pub fn new_account_json(config: &Config, rng: &mut impl Rng) -> String {
    let (email, password) = new_credentials(config, rng);
    let mut v = serde_json::json!({ "email": email, "password": password });
    if self_signed(config) {
        v["dclogin_url"] = dclogin_url(
            &email,
            &password,
            &config.mail_domain,
            config.ports.imaps,
            config.ports.submissions,
        )
        .into();
    }
    v.to_string()
}

/// XML text escaping for element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Mozilla autoconfig v1.1 document (`config-v1.1.xml`) of the reference's
/// `autoconfig.xml.j2`: IMAP on the IMAPS port (SSL), the IMAP port (STARTTLS) and the HTTPS port
/// (SSL, ALPN `imap`); SMTP on the submissions port (SSL), the submission port (STARTTLS) and the
/// HTTPS port (SSL, ALPN `smtp`). Ports set to 0 (disabled) are left out; `relay dev` names its
/// dev ports.
pub fn autoconfig_xml(config: &Config) -> String {
    let d = xml_escape(&config.mail_domain);
    let p = config.ports;
    let server = |tag: &str, kind: &str, port: u16, socket: &str| {
        if port == 0 {
            return String::new();
        }
        format!(
            "    <{tag} type=\"{kind}\">\n      <hostname>{d}</hostname>\n      <port>{port}</port>\n      \
             <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      \
             <username>%EMAILADDRESS%</username>\n    </{tag}>\n"
        )
    };
    let mut servers = String::new();
    for (port, socket) in [(p.imaps, "SSL"), (p.imap, "STARTTLS"), (p.https, "SSL")] {
        servers.push_str(&server("incomingServer", "imap", port, socket));
    }
    for (port, socket) in [
        (p.submissions, "SSL"),
        (p.submission, "STARTTLS"),
        (p.https, "SSL"),
    ] {
        servers.push_str(&server("outgoingServer", "smtp", port, socket));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  \
         <emailProvider id=\"{d}\">\n    <domain>{d}</domain>\n    <displayName>{d} chatmail</displayName>\n    \
         <displayShortName>{d}</displayShortName>\n{servers}  </emailProvider>\n</clientConfig>\n"
    )
}

/// The MTA-STS policy (RFC 8461) of the reference's `mta-sts.txt.j2`.
pub fn mta_sts(config: &Config) -> String {
    format!(
        "version: STSv1\nmode: enforce\nmx: {}\nmax_age: 2419200\n",
        config.mail_domain
    )
}

/// The QR code of `text` as a standalone SVG image (`size` pixels at least).
pub fn qr_svg(text: &str, size: u32) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(size, size)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// The QR code of `text` for a terminal: two rows per line with Unicode half blocks, dark on
/// light (a quiet zone around it so phones read it from a dark terminal too).
pub fn qr_terminal(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn dev() -> Config {
        Config::dev("/nonexistent".into())
    }

    fn with(kv: &[&str]) -> Config {
        let mut raw = crate::config::RawConfig::default();
        for s in kv {
            raw.set(s).unwrap();
        }
        Config::build(
            &raw,
            crate::config::Mode::Dev {
                data_dir: "/nonexistent".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn credentials_have_the_reference_lengths_and_alphabets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let config = with(&["username_max_length=11", "password_min_length=20"]);
        for _ in 0..200 {
            let (email, pw) = new_credentials(&config, &mut rng);
            let (user, domain) = email.split_once('@').unwrap();
            assert_eq!(domain, "[127.0.0.1]");
            assert_eq!(user.len(), 11);
            assert!(user.bytes().all(|b| USER_ALPHABET.contains(&b)), "{user}");
            assert_eq!(pw.len(), 23);
            assert!(pw.bytes().all(|b| b.is_ascii_graphic()), "{pw}");
        }
        let d = dev();
        let (email, pw) = new_credentials(&d, &mut rng);
        assert_eq!((email.len() - "@[127.0.0.1]".len(), pw.len()), (9, 12));
    }

    #[test]
    fn new_json_has_a_dclogin_url_only_when_self_signed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let v: serde_json::Value =
            serde_json::from_str(&new_account_json(&dev(), &mut rng)).unwrap();
        let email = v["email"].as_str().unwrap();
        let pw = v["password"].as_str().unwrap();
        let url = v["dclogin_url"].as_str().unwrap();
        assert!(url.starts_with(&format!("dclogin:{email}?p=")), "{url}");
        assert!(url.contains("&ih=127.0.0.1&ip=10993&is=ssl&sh=127.0.0.1&sp=10465&ss=ssl&ic=3"));
        let encoded = url.split("p=").nth(1).unwrap().split('&').next().unwrap();
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'%'));
        assert!(encoded.len() >= pw.len());
        let real = with(&[
            "mail_domain=chat.example.org",
            "tls_external_cert_and_key=/c /k",
        ]);
        assert!(!self_signed(&real));
        let v: serde_json::Value =
            serde_json::from_str(&new_account_json(&real, &mut rng)).unwrap();
        assert!(v["email"].as_str().unwrap().ends_with("@chat.example.org"));
        assert!(v.get("dclogin_url").is_none());
        assert!(self_signed(&with(&["mail_domain=_test.example"])));
    }

    #[test]
    fn invite_links_name_the_https_port_unless_443() {
        assert_eq!(
            dcaccount_url(&dev()),
            "dcaccount:https://127.0.0.1:10443/new"
        );
        let c = with(&["mail_domain=chat.example.org", "https_port=443"]);
        assert_eq!(dcaccount_url(&c), "dcaccount:https://chat.example.org/new");
        assert_eq!(dcaccount_short(&c), "dcaccount:chat.example.org");
    }

    #[test]
    fn mta_sts_policy_parses() {
        let c = with(&["mail_domain=chat.example.org"]);
        let text = mta_sts(&c);
        let fields: Vec<(&str, &str)> = text
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(':').expect("key: value");
                (k, v.trim())
            })
            .collect();
        assert_eq!(fields[0], ("version", "STSv1"), "version comes first");
        let get = |k| fields.iter().find(|f| f.0 == k).map(|f| f.1);
        assert_eq!(get("mode"), Some("enforce"));
        assert_eq!(get("mx"), Some("chat.example.org"));
        let max_age: u64 = get("max_age").unwrap().parse().unwrap();
        assert!(max_age <= 31_557_600, "RFC 8461 caps max_age at a year");
    }

    /// The servers of one direction: (type, hostname, port, socketType, auth, username).
    fn servers(doc: &roxmltree::Document<'_>, tag: &str) -> Vec<[String; 6]> {
        let text = |n: roxmltree::Node<'_, '_>, name: &str| {
            n.children()
                .find(|c| c.has_tag_name(name))
                .and_then(|c| c.text())
                .unwrap_or_else(|| panic!("<{tag}> without <{name}>"))
                .to_owned()
        };
        doc.descendants()
            .filter(|n| n.has_tag_name(tag))
            .map(|n| {
                [
                    n.attribute("type").unwrap().to_owned(),
                    text(n, "hostname"),
                    text(n, "port"),
                    text(n, "socketType"),
                    text(n, "authentication"),
                    text(n, "username"),
                ]
            })
            .collect()
    }

    #[test]
    fn autoconfig_has_the_required_elements_and_the_configured_ports() {
        let c = with(&["mail_domain=_chat.example", "imap_port=0"]);
        let xml = autoconfig_xml(&c);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert!(root.has_tag_name("clientConfig"));
        assert_eq!(root.attribute("version"), Some("1.1"));
        let provider = root
            .children()
            .find(|n| n.has_tag_name("emailProvider"))
            .unwrap();
        assert_eq!(provider.attribute("id"), Some("_chat.example"));
        for required in ["domain", "displayName", "displayShortName"] {
            assert!(
                provider.children().any(|n| n.has_tag_name(required)),
                "{required}"
            );
        }
        let s = |a: &str, b: &str, c: &str| {
            [
                a,
                "_chat.example",
                b,
                c,
                "password-cleartext",
                "%EMAILADDRESS%",
            ]
            .map(str::to_owned)
        };
        // imap_port = 0: no STARTTLS IMAP entry.
        assert_eq!(
            servers(&doc, "incomingServer"),
            vec![s("imap", "10993", "SSL"), s("imap", "10443", "SSL")]
        );
        assert_eq!(
            servers(&doc, "outgoingServer"),
            vec![
                s("smtp", "10465", "SSL"),
                s("smtp", "10587", "STARTTLS"),
                s("smtp", "10443", "SSL")
            ]
        );
        assert_eq!(xml_escape("a<b&\"c'>"), "a&lt;b&amp;&quot;c&#39;&gt;");
    }

    #[test]
    fn qr_codes_render() {
        let svg = qr_svg("dcaccount:https://127.0.0.1:10443/new", 256);
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
        assert!(qr_terminal("dcaccount:x").lines().count() > 10);
    }
}
