//! What `relay import` reads from a Dovecot Maildir, as pure functions: message file names
//! (flags, size, date), `dovecot-uidlist` (UIDVALIDITY, UIDNEXT, UIDs), `dovecot-keywords`,
//! folder directory names (`.A.B` → `A/B`), and which directory entries are what (symlinks are
//! never followed). No I/O: the driver (`import/mod.rs`) passes names and file contents in.

use std::collections::HashMap;

use crate::store::Flag;

/// A message file name, `<base>[:2,<flags>]` with `<base>` = `<time>.<unique>[,S=<size>][,W=<vsize>]`
/// (Dovecot's Maildir names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName<'a> {
    /// The name without the info part (what `dovecot-uidlist` lists).
    pub base: &'a str,
    /// `\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft` from `S R F T D`.
    pub flags: Vec<Flag>,
    /// Keyword letters `a`..`z` as indexes into `dovecot-keywords`.
    pub keywords: Vec<u8>,
    /// `S=`: the message size (uncompressed).
    pub size: Option<u64>,
    /// The leading unix time of the base (when the message arrived).
    pub time: Option<i64>,
}

/// Parses a Maildir file name. An error names what is wrong; the driver then imports the
/// message with no flags and reports the name (a message is never dropped for its name).
pub fn parse_file_name(name: &str) -> Result<FileName<'_>, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    let (base, info) = match name.split_once(':') {
        Some((base, info)) => (base, Some(info)),
        None => (name, None),
    };
    if base.is_empty() {
        return Err("empty base name");
    }
    let mut flags = Vec::new();
    let mut keywords = Vec::new();
    if let Some(info) = info {
        let letters = info
            .strip_prefix("2,")
            .ok_or("info part is not `2,<flags>`")?;
        for c in letters.bytes() {
            match c {
                b'S' => flags.push(Flag::Seen),
                b'R' => flags.push(Flag::Answered),
                b'F' => flags.push(Flag::Flagged),
                b'T' => flags.push(Flag::Deleted),
                b'D' => flags.push(Flag::Draft),
                // Passed (resent): no IMAP flag.
                b'P' => {}
                b'a'..=b'z' => keywords.push(c - b'a'),
                _ => return Err("unknown flag letter"),
            }
        }
    }
    flags.dedup();
    keywords.sort_unstable();
    keywords.dedup();
    let mut fields = base.split(',');
    let head = fields.next().unwrap_or_default();
    let time = head
        .split('.')
        .next()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok());
    let size = fields
        .find_map(|f| f.strip_prefix("S="))
        .and_then(|s| s.parse().ok());
    Ok(FileName {
        base,
        flags,
        keywords,
        size,
        time,
    })
}

/// The base of a file name (the part `dovecot-uidlist` lists): before the first `:`.
pub fn base_of(name: &str) -> &str {
    name.split_once(':').map_or(name, |(b, _)| b)
}

/// A folder's `dovecot-uidlist`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidList {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// The next UID Dovecot would have given.
    pub next_uid: u32,
    /// File base name → UID.
    pub uids: HashMap<String, u32>,
}

/// Parses `dovecot-uidlist` (version 3: `3 V<uidvalidity> N<nextuid> G<guid>`, then lines
/// `<uid> [<field>...] :<base>`; version 1: `1 <uidvalidity> <nextuid>`, then `<uid> <base>`).
/// Lines that do not parse are left out (their files get new UIDs after the listed ones).
pub fn parse_uidlist(text: &str) -> Result<UidList, &'static str> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty file")?;
    let mut words = header.split_ascii_whitespace();
    let version = words.next().ok_or("empty header")?;
    let (mut uid_validity, mut next_uid) = (None, None);
    match version {
        "3" => {
            for w in words {
                if let Some(v) = w.strip_prefix('V') {
                    uid_validity = v.parse().ok();
                } else if let Some(n) = w.strip_prefix('N') {
                    next_uid = n.parse().ok();
                }
            }
        }
        "1" => {
            uid_validity = words.next().and_then(|v| v.parse().ok());
            next_uid = words.next().and_then(|v| v.parse().ok());
        }
        _ => return Err("unknown version"),
    }
    let uid_validity: u32 = uid_validity.filter(|v| *v != 0).ok_or("no UIDVALIDITY")?;
    let next_uid: u32 = next_uid.filter(|n| *n != 0).ok_or("no next UID")?;
    let mut uids = HashMap::new();
    for line in lines {
        let Some((uid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        if uid == 0 || uid == u32::MAX {
            continue;
        }
        let name = match rest.split_once(':') {
            Some((_, name)) => name,
            None => rest.split_ascii_whitespace().last().unwrap_or_default(),
        };
        let base = base_of(name);
        if !base.is_empty() {
            uids.insert(base.to_owned(), uid);
        }
    }
    Ok(UidList {
        uid_validity,
        next_uid,
        uids,
    })
}

/// Parses `dovecot-keywords` (`<index> <name>` lines): keyword letter index → name.
pub fn parse_keywords(text: &str) -> HashMap<u8, String> {
    text.lines()
        .filter_map(|l| {
            let (i, name) = l.split_once(' ')?;
            let i: u8 = i.parse().ok().filter(|i| *i < 26)?;
            let name = name.trim();
            (!name.is_empty()).then(|| (i, name.to_owned()))
        })
        .collect()
}

/// The flags of a parsed name with its keyword letters resolved (letters without a name in
/// `dovecot-keywords` are left out).
pub fn flags_of(name: &FileName<'_>, keywords: &HashMap<u8, String>) -> Vec<Flag> {
    let mut flags = name.flags.clone();
    flags.extend(
        name.keywords
            .iter()
            .filter_map(|k| keywords.get(k))
            .map(|k| Flag::Keyword(k.clone())),
    );
    flags
}

/// The mailbox name of a Maildir++ folder directory: `.DeltaChat` → `DeltaChat`, `.A.B` →
/// `A/B`. `None` for a name that is not a folder (`.`, `..`, empty parts).
pub fn folder_name(dir: &str) -> Option<String> {
    let rest = dir.strip_prefix('.')?;
    if rest.is_empty() || rest.split('.').any(str::is_empty) {
        return None;
    }
    Some(rest.replace('.', "/"))
}

/// What a directory entry is, as `readdir` says without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link: never followed (it may point outside the tree).
    Symlink,
    /// Anything else (socket, fifo, device).
    Other,
}

/// An entry of a mailboxes directory (`/home/vmail/mail/<domain>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEntry {
    /// An account directory: the lowercase address.
    Account(String),
    /// A symlink where an account could be: reported, not followed.
    Symlink,
    /// Not an account (`pending_notifications`, files, ...).
    Other,
}

/// Classifies an entry of the mailboxes directory (accounts are the directories whose name
/// holds an `@`, as the reference's expiry and doveauth see them).
pub fn classify_domain_entry(name: &str, kind: EntryKind) -> DomainEntry {
    if !name.contains('@') || name.starts_with('.') {
        return DomainEntry::Other;
    }
    match kind {
        EntryKind::Dir => DomainEntry::Account(name.to_lowercase()),
        EntryKind::Symlink => DomainEntry::Symlink,
        EntryKind::File | EntryKind::Other => DomainEntry::Other,
    }
}

/// An entry of a folder's `cur/` or `new/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEntry {
    /// A message file.
    Message,
    /// A symlink: reported, not followed.
    Symlink,
    /// Not a message (a directory, a hidden file): reported.
    NotMessage,
}

/// Classifies an entry of `cur/` or `new/`.
pub fn classify_message_entry(name: &str, kind: EntryKind) -> MessageEntry {
    match kind {
        EntryKind::Symlink => MessageEntry::Symlink,
        EntryKind::File if !name.starts_with('.') => MessageEntry::Message,
        _ => MessageEntry::NotMessage,
    }
}

/// A message found in a folder, before its UID is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file name (in `cur/` or `new/`).
    pub name: String,
    /// Whether it is in `new/`.
    pub in_new: bool,
}

/// A message with the UID it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// UID.
    pub uid: u32,
    /// The file name.
    pub name: String,
    /// Whether it is in `new/`.
    pub in_new: bool,
}

/// Gives every message of a folder its UID: the one `dovecot-uidlist` lists for its base name,
/// else (files Dovecot had not listed) the next ones after `max(next_uid, highest listed + 1)`,
/// in order of arrival time then name, so that a second run gives them the same UIDs. A file
/// listed twice under one base (in `new/` and `cur/` during a rename) keeps the `cur/` one.
/// Returns the messages in UID order.
pub fn place(found: Vec<Found>, list: Option<&UidList>) -> Vec<Placed> {
    let mut by_uid: HashMap<u32, Placed> = HashMap::new();
    let mut unlisted = Vec::new();
    for f in found {
        let listed = list.and_then(|l| l.uids.get(base_of(&f.name)).copied());
        match listed {
            Some(uid) => {
                let keep_old = by_uid.get(&uid).is_some_and(|old| !old.in_new);
                if !keep_old {
                    by_uid.insert(
                        uid,
                        Placed {
                            uid,
                            name: f.name,
                            in_new: f.in_new,
                        },
                    );
                }
            }
            None => unlisted.push(f),
        }
    }
    let highest = by_uid.keys().max().copied().unwrap_or(0);
    let next = list
        .map_or(1, |l| l.next_uid)
        .max(highest.saturating_add(1));
    unlisted.sort_by(|a, b| {
        let key = |f: &Found| parse_file_name(&f.name).ok().and_then(|n| n.time);
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    let mut placed: Vec<Placed> = by_uid.into_values().collect();
    // UID u32::MAX is never handed out; files beyond it are left out (never in practice).
    placed.extend((next..u32::MAX - 1).zip(unlisted).map(|(uid, f)| Placed {
        uid,
        name: f.name,
        in_new: f.in_new,
    }));
    placed.sort_by_key(|p| p.uid);
    placed
}

/// How a message file is compressed (Dovecot's `zlib_save = gz` writes gzip; `zlib` is also
/// possible), told by its first bytes: no message starts with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain message.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zlib (RFC 1950).
    Zlib,
}

/// Tells the compression from the first two bytes of a file.
pub fn compression_of(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        // RFC 1950 §2.2: CM = 8 (deflate), CINFO <= 7, and CMF·256 + FLG a multiple of 31.
        [cmf, flg, ..]
            if cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 =>
        {
            Compression::Zlib
        }
        _ => Compression::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_flags_size_and_time() {
        let n = parse_file_name("1700000000.M1P2.host,S=1234,W=1260:2,FRS").unwrap();
        assert_eq!(n.base, "1700000000.M1P2.host,S=1234,W=1260");
        assert_eq!(n.flags, vec![Flag::Flagged, Flag::Answered, Flag::Seen]);
        assert_eq!(n.size, Some(1234));
        assert_eq!(n.time, Some(1_700_000_000));
        let n = parse_file_name("1700000001.M3.host,S=9:2,").unwrap();
        assert!(n.flags.is_empty());
        let n = parse_file_name("1700000001.M3.host:2,TDa c").err();
        assert_eq!(n, Some("unknown flag letter"));
        let n = parse_file_name("1700000001.M3.host:2,TDac").unwrap();
        assert_eq!(n.flags, vec![Flag::Deleted, Flag::Draft]);
        assert_eq!(n.keywords, vec![0, 2]);
        // new/: no info part, no flags.
        let n = parse_file_name("1700000002.M4.host,S=5").unwrap();
        assert!(n.flags.is_empty() && n.keywords.is_empty());
        assert_eq!(n.base, "1700000002.M4.host,S=5");
        // Passed is no IMAP flag.
        assert!(parse_file_name("1.a:2,P").unwrap().flags.is_empty());
    }

    #[test]
    fn unparsable_names_say_why() {
        assert_eq!(parse_file_name(""), Err("empty name"));
        assert_eq!(parse_file_name(":2,S"), Err("empty base name"));
        assert_eq!(
            parse_file_name("1.a:1,experimental"),
            Err("info part is not `2,<flags>`")
        );
        assert_eq!(parse_file_name("1.a:2,S!"), Err("unknown flag letter"));
        // A name without the usual parts is a name: no time, no size.
        let n = parse_file_name("message-from-elsewhere").unwrap();
        assert_eq!((n.time, n.size), (None, None));
    }

    #[test]
    fn uidlist_version_3_and_1() {
        let text = "3 V1700000000 N7 G0123abcd\n\
                    1 :1700000000.M1.host,S=10,W=11\n\
                    4 W120 S100 :1700000005.M2.host,S=100,W=120\n\
                    bad line\n\
                    0 :zero\n\
                    6 :1700000009.M3.host:2,S\n";
        let l = parse_uidlist(text).unwrap();
        assert_eq!((l.uid_validity, l.next_uid), (1_700_000_000, 7));
        assert_eq!(l.uids.len(), 3);
        assert_eq!(l.uids["1700000000.M1.host,S=10,W=11"], 1);
        assert_eq!(l.uids["1700000005.M2.host,S=100,W=120"], 4);
        assert_eq!(l.uids["1700000009.M3.host"], 6);
        let l = parse_uidlist("1 1600000000 3\n2 1600.a.b\n").unwrap();
        assert_eq!((l.uid_validity, l.next_uid), (1_600_000_000, 3));
        assert_eq!(l.uids["1600.a.b"], 2);
        assert_eq!(parse_uidlist(""), Err("empty file"));
        assert_eq!(parse_uidlist("2 V1 N1"), Err("unknown version"));
        assert_eq!(parse_uidlist("3 N4 G00"), Err("no UIDVALIDITY"));
    }

    #[test]
    fn keywords_and_flags() {
        let k = parse_keywords("0 $MDNSent\n2 $Forwarded\nx bad\n30 toolarge\n");
        assert_eq!(k.len(), 2);
        let n = parse_file_name("1.a:2,Sac").unwrap();
        assert_eq!(
            flags_of(&n, &k),
            vec![
                Flag::Seen,
                Flag::Keyword("$MDNSent".into()),
                Flag::Keyword("$Forwarded".into())
            ]
        );
    }

    #[test]
    fn folder_names() {
        assert_eq!(folder_name(".DeltaChat").as_deref(), Some("DeltaChat"));
        assert_eq!(folder_name(".A.B").as_deref(), Some("A/B"));
        assert_eq!(folder_name("."), None);
        assert_eq!(folder_name(".."), None);
        assert_eq!(folder_name(".A..B"), None);
        assert_eq!(folder_name(".A."), None);
        assert_eq!(folder_name("cur"), None);
    }

    #[test]
    fn tree_walk_decisions() {
        use EntryKind::*;
        assert_eq!(
            classify_domain_entry("Alice@Example.org", Dir),
            DomainEntry::Account("alice@example.org".into())
        );
        assert_eq!(
            classify_domain_entry("bob@example.org", Symlink),
            DomainEntry::Symlink
        );
        assert_eq!(
            classify_domain_entry("pending_notifications", Dir),
            DomainEntry::Other
        );
        assert_eq!(classify_domain_entry("x@y", File), DomainEntry::Other);
        assert_eq!(
            classify_message_entry("1.a:2,S", File),
            MessageEntry::Message
        );
        assert_eq!(
            classify_message_entry("1.a:2,S", Symlink),
            MessageEntry::Symlink
        );
        assert_eq!(
            classify_message_entry(".hidden", File),
            MessageEntry::NotMessage
        );
        assert_eq!(classify_message_entry("sub", Dir), MessageEntry::NotMessage);
    }

    #[test]
    fn listed_files_keep_their_uids_and_the_rest_follow_in_arrival_order() {
        let list = parse_uidlist("3 V9 N10 G0\n3 :200.b.h\n5 :100.a.h\n").unwrap();
        let found = vec![
            Found {
                name: "300.d.h".into(),
                in_new: true,
            },
            Found {
                name: "100.a.h:2,S".into(),
                in_new: false,
            },
            Found {
                name: "250.c.h".into(),
                in_new: true,
            },
            Found {
                name: "200.b.h:2,".into(),
                in_new: false,
            },
            Found {
                name: "200.b.h".into(),
                in_new: true,
            },
        ];
        let placed = place(found.clone(), Some(&list));
        let got: Vec<(u32, &str)> = placed.iter().map(|p| (p.uid, p.name.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (3, "200.b.h:2,"),
                (5, "100.a.h:2,S"),
                (10, "250.c.h"),
                (11, "300.d.h")
            ]
        );
        // The same tree gives the same UIDs, whatever the directory order.
        let mut rev = found;
        rev.reverse();
        assert_eq!(place(rev, Some(&list)), placed);
        // Without a uidlist: 1, 2, ... in arrival order.
        let placed = place(
            vec![
                Found {
                    name: "9.x".into(),
                    in_new: false,
                },
                Found {
                    name: "1.y".into(),
                    in_new: false,
                },
            ],
            None,
        );
        assert_eq!(placed[0].uid, 1);
        assert_eq!(placed[0].name, "1.y");
        assert_eq!(placed[1].uid, 2);
    }

    #[test]
    fn compression_by_magic() {
        assert_eq!(compression_of(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(compression_of(&[0x78, 0x9c]), Compression::Zlib);
        assert_eq!(compression_of(&[0x78, 0x01]), Compression::Zlib);
        assert_eq!(compression_of(&[0x78, 0xda]), Compression::Zlib);
        assert_eq!(compression_of(b"x-header: 1"), Compression::None);
        assert_eq!(compression_of(b"From: a"), Compression::None);
        assert_eq!(compression_of(b""), Compression::None);
    }
}
