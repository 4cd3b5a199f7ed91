//! What `relay import` reads from the reference relay's own files, as pure functions: the
//! account's `password` file, its `metadata.json` (push device tokens) and the reference's
//! `chatmail.ini` compared with ours. No I/O: the driver passes contents and times in.

use std::collections::BTreeMap;

use crate::accounts::HASH_PREFIX;
use crate::store::notify::{check_token, TOKEN_LIFETIME};

/// The prefix put before a hash this relay cannot check: the account and its messages are
/// imported, but no password verifies against it (as at the reference, where an operator
/// blocks a user by editing the `password` file); the original stays readable after the
/// prefix.
pub const DISABLED_PREFIX: &str = "{IMPORT-DISABLED}";

/// An account's `password` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// `{SHA512-CRYPT}$6$...`: stored as is, the old password logs in.
    Usable(String),
    /// Another scheme (or none): the account is imported disabled with this stored value
    /// ([`DISABLED_PREFIX`] + the file's text); `scheme` names what was found for the report.
    Disabled {
        /// The value to store.
        stored: String,
        /// `{BLF-CRYPT}`, `$2y$`, `empty`, ...
        scheme: String,
    },
}

/// Reads a `password` file's text (the reference writes `{SHA512-CRYPT}` + `crypt()` SHA-512;
/// a bare `$6$` hash is taken too).
pub fn parse_password(text: &str) -> Password {
    let t = text.trim();
    let crypt = t.strip_prefix(HASH_PREFIX).unwrap_or(t);
    let well_formed = crypt.starts_with("$6$")
        && crypt.split('$').count() >= 4
        && !crypt.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed {
        return Password::Usable(format!("{HASH_PREFIX}{crypt}"));
    }
    let scheme = if t.is_empty() {
        "empty".to_owned()
    } else if let Some(end) = t.strip_prefix('{').and_then(|r| r.find('}')) {
        t[..end + 2].to_owned()
    } else if t.starts_with('$') {
        t.split('$').take(2).collect::<Vec<_>>().join("$") + "$"
    } else {
        "unknown".to_owned()
    };
    let cleaned: String = t.chars().filter(|c| !c.is_control()).collect();
    Password::Disabled {
        stored: format!("{DISABLED_PREFIX}{cleaned}"),
        scheme,
    }
}

/// The unix day of a last login from the `password` file's mtime (the reference keeps the last
/// login day there).
pub fn last_login_day(mtime: i64) -> u32 {
    u32::try_from(mtime.div_euclid(86_400)).unwrap_or(0)
}

/// The device tokens of a `metadata.json` (`{"devicetoken": {"<token>": <unix time>, ...}}`, or
/// the older list form `{"devicetoken": ["<token>", ...]}`, dated `now`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// `(token, time set)`, oldest first.
    pub live: Vec<(String, i64)>,
    /// Tokens left out, with why.
    pub skipped: Vec<&'static str>,
}

/// Parses a `metadata.json`; an error when it is not JSON of the reference's shape. Tokens set
/// more than 90 days before `now` or more than 60 s after it are left out, as the reference
/// does.
pub fn parse_metadata(text: &[u8], now: i64) -> Result<Tokens, String> {
    let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let mut tokens = Tokens::default();
    let entries: Vec<(String, i64)> = match obj.get("devicetoken") {
        None => Vec::new(),
        Some(serde_json::Value::Object(map)) => {
            let mut v = Vec::new();
            for (t, time) in map {
                match time.as_i64() {
                    Some(time) => v.push((t.clone(), time)),
                    None => tokens.skipped.push("token time is not a number"),
                }
            }
            v
        }
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|t| match t.as_str() {
                Some(t) => Some((t.to_owned(), now)),
                None => {
                    tokens.skipped.push("token is not a string");
                    None
                }
            })
            .collect(),
        Some(_) => return Err("devicetoken is neither an object nor a list".into()),
    };
    for (token, time) in entries {
        if let Err(why) = check_token(token.as_bytes()) {
            tokens.skipped.push(why);
        } else if time <= now - TOKEN_LIFETIME {
            tokens
                .skipped
                .push("token expired (set more than 90 days ago)");
        } else if time >= now + 60 {
            tokens.skipped.push("token set in the future");
        } else {
            tokens.live.push((token, time));
        }
    }
    tokens
        .live
        .sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(tokens)
}

/// What to do with one option of the reference's `chatmail.ini`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IniAdvice {
    /// Our ini has the same value.
    Same(String),
    /// An option we share whose value differs or is unset in ours: set `key = value`.
    Set(String, String),
    /// An option this relay does not have (or reads with another meaning): not carried over.
    NotOurs(String),
}

/// Reference options with a name we know but another meaning, never carried over: our
/// `smtp_port` is port 25, the reference's proposed one is submission (587); its
/// `imap_port`/`imaps_port` are Dovecot's, ours listen ourselves (set them by hand if needed).
const DIFFERENT_MEANING: &[&str] = &["smtp_port", "smtps_port", "imap_port", "imaps_port"];

/// Compares the reference's `[params]` with ours (`known` tells whether we have an option).
pub fn compare_ini(
    reference: &BTreeMap<String, String>,
    ours: &BTreeMap<String, String>,
    known: impl Fn(&str) -> bool,
) -> Vec<IniAdvice> {
    reference
        .iter()
        .map(|(k, v)| {
            if !known(k) || DIFFERENT_MEANING.contains(&k.as_str()) {
                IniAdvice::NotOurs(k.clone())
            } else if ours.get(k) == Some(v) {
                IniAdvice::Same(k.clone())
            } else {
                IniAdvice::Set(k.clone(), v.clone())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "{SHA512-CRYPT}$6$saltsalt$rGHbrrsOT1WLTt4dcfZKq1FiG//1B7ZAMkD.MeAC8/d9MOtB5EzYEffFnBarQhF6MiLywY/KggaYjrNNrzAnj/";

    #[test]
    fn sha512_crypt_is_usable_other_schemes_are_disabled() {
        assert_eq!(
            parse_password(&format!("{HASH}\n")),
            Password::Usable(HASH.into())
        );
        let bare = HASH.strip_prefix(HASH_PREFIX).unwrap();
        assert_eq!(parse_password(bare), Password::Usable(HASH.into()));
        let Password::Disabled { stored, scheme } =
            parse_password("{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuu\n")
        else {
            panic!("usable")
        };
        assert_eq!(scheme, "{BLF-CRYPT}");
        assert_eq!(
            stored,
            "{IMPORT-DISABLED}{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuu"
        );
        assert!(!crate::accounts::verify_password(&stored, "anything"));
        let Password::Disabled { scheme, .. } = parse_password("$1$md5salt$hash") else {
            panic!("usable")
        };
        assert_eq!(scheme, "$1$");
        let Password::Disabled { scheme, .. } = parse_password("  \n") else {
            panic!("usable")
        };
        assert_eq!(scheme, "empty");
        let Password::Disabled { scheme, .. } = parse_password("plaintext") else {
            panic!("usable")
        };
        assert_eq!(scheme, "unknown");
    }

    #[test]
    fn last_login_is_the_mtime_day() {
        assert_eq!(last_login_day(86_400 * 20_000 + 5), 20_000);
        assert_eq!(last_login_day(-5), 0);
    }

    #[test]
    fn metadata_tokens_live_expired_and_broken() {
        let now = 1_800_000_000;
        let text = format!(
            r#"{{"devicetoken": {{"openpgp:b": {}, "a": {}, "old": {}, "future": {}, "sp ace": {}}}}}"#,
            now - 10,
            now - 100,
            now - TOKEN_LIFETIME - 1,
            now + 3600,
            now
        );
        let t = parse_metadata(text.as_bytes(), now).unwrap();
        assert_eq!(
            t.live,
            vec![("a".into(), now - 100), ("openpgp:b".into(), now - 10)]
        );
        assert_eq!(t.skipped.len(), 3);
        let t = parse_metadata(br#"{"devicetoken": ["x", "y", 3]}"#, now).unwrap();
        assert_eq!(t.live, vec![("x".into(), now), ("y".into(), now)]);
        assert_eq!(t.skipped, vec!["token is not a string"]);
        assert_eq!(parse_metadata(b"{}", now).unwrap(), Tokens::default());
        assert!(parse_metadata(b"{\"devicetoken\": {", now).is_err());
        assert!(parse_metadata(b"[]", now).is_err());
        assert!(parse_metadata(br#"{"devicetoken": 5}"#, now).is_err());
    }

    #[test]
    fn ini_options_we_share_are_advised() {
        let reference: BTreeMap<String, String> = [
            ("mail_domain", "c.example.org"),
            ("max_message_size", "52428800"),
            ("delete_mails_after", "20"),
            ("mailboxes_dir", "/home/vmail/mail/c.example.org"),
            ("smtp_port", "587"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let ours: BTreeMap<String, String> = [("mail_domain", "c.example.org")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let known = |k: &str| k != "mailboxes_dir";
        let advice = compare_ini(&reference, &ours, known);
        assert_eq!(
            advice,
            vec![
                IniAdvice::Set("delete_mails_after".into(), "20".into()),
                IniAdvice::Same("mail_domain".into()),
                IniAdvice::NotOurs("mailboxes_dir".into()),
                IniAdvice::Set("max_message_size".into(), "52428800".into()),
                IniAdvice::NotOurs("smtp_port".into()),
            ]
        );
    }
}
