//! IMAP command parser: one framed command (see `frame`) in, one [`Command`] out.
//!
//! Hand-written over `&[u8]` with a small cursor (house style §3.4) rather than imap-codec's
//! `CommandCodec`: the chatmail subset needs QUOTA, COMPRESS, UID EXPUNGE, MOVE, STORE
//! UNCHANGEDSINCE, FETCH CHANGEDSINCE, METADATA and SEARCH MODSEQ in one grammar with exact error
//! texts, and a single parser for all of them is smaller than converting imap-codec's types plus
//! hand-written fallbacks. Errors carry the expected grammar as `&'static str` and become `BAD`
//! in one place (the session). Never panics on any input.

use super::cursor::{Cursor, R};
use super::date::{parse_date, parse_date_time};
use super::types::{Command, FetchItem, SearchKey, Section, SectionKind, StatusItem};
use crate::store::{Flag, FlagMode};

/// A parse error: what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The command's tag if it could be read.
    pub tag: Option<String>,
    /// What the parser expected.
    pub expected: &'static str,
}

/// Parse one framed command (with its CRLF). Returns the tag and the command.
pub fn parse(input: &[u8]) -> Result<(String, Command), ParseError> {
    let mut c = Cursor::new(input);
    let tag = c.tag().map_err(|expected| ParseError {
        tag: None,
        expected,
    })?;
    let cmd = parse_after_tag(&mut c).map_err(|expected| ParseError {
        tag: Some(tag.clone()),
        expected,
    })?;
    Ok((tag, cmd))
}

fn parse_after_tag(c: &mut Cursor<'_>) -> R<Command> {
    c.sp()?;
    let name = c.atom()?.to_ascii_uppercase();
    let cmd = match name.as_str() {
        "CAPABILITY" => Command::Capability,
        "NOOP" => Command::Noop,
        "LOGOUT" => Command::Logout,
        "STARTTLS" => Command::StartTls,
        "CHECK" => Command::Check,
        "CLOSE" => Command::Close,
        "UNSELECT" => Command::Unselect,
        "IDLE" => Command::Idle,
        "NAMESPACE" => Command::Namespace,
        "LOGIN" => {
            c.sp()?;
            let u = c.astring_utf8()?;
            c.sp()?;
            let p = c.astring_utf8()?;
            Command::Login(u, p)
        }
        "AUTHENTICATE" => {
            c.sp()?;
            let mech = c.atom()?.to_ascii_uppercase();
            let initial = if c.eat(b" ") {
                Some(c.take_while(|b| b.is_ascii_graphic()).to_owned())
            } else {
                None
            };
            Command::Authenticate(mech, initial)
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while c.eat(b" ") {
                caps.push(c.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return Err("ENABLE capability...");
            }
            Command::Enable(caps)
        }
        "ID" => {
            c.sp()?;
            if c.eat_ci(b"NIL") {
            } else {
                c.skip_parenthesized()?;
            }
            Command::Id
        }
        "LIST" | "LSUB" => {
            c.sp()?;
            // LIST-EXTENDED selection options are accepted and ignored.
            if c.peek() == Some(b'(') {
                c.skip_parenthesized()?;
                c.sp()?;
            }
            let reference = c.mailbox()?;
            c.sp()?;
            let pattern = c.list_mailbox()?;
            if c.eat(b" ") {
                // RETURN (...) options: ignored.
                c.expect_ci(b"RETURN", "RETURN (options)")?;
                c.sp()?;
                c.skip_parenthesized()?;
            }
            Command::List {
                lsub: name == "LSUB",
                reference,
                pattern,
            }
        }
        "STATUS" => {
            c.sp()?;
            let mbox = c.mailbox()?;
            c.sp()?;
            c.expect(b"(", "STATUS mailbox (items)")?;
            let mut items = Vec::new();
            loop {
                let a = c.atom()?.to_ascii_uppercase();
                items.push(match a.as_str() {
                    "MESSAGES" => StatusItem::Messages,
                    "UIDNEXT" => StatusItem::UidNext,
                    "UIDVALIDITY" => StatusItem::UidValidity,
                    "UNSEEN" => StatusItem::Unseen,
                    "RECENT" => StatusItem::Recent,
                    "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                    "SIZE" => StatusItem::Size,
                    _ => return Err("STATUS item"),
                });
                if !c.eat(b" ") {
                    break;
                }
            }
            c.expect(b")", "')'")?;
            Command::Status(mbox, items)
        }
        "CREATE" | "DELETE" | "SUBSCRIBE" | "UNSUBSCRIBE" | "GETQUOTAROOT" => {
            c.sp()?;
            let m = c.mailbox()?;
            match name.as_str() {
                "CREATE" => Command::Create(m),
                "DELETE" => Command::Delete(m),
                "SUBSCRIBE" => Command::Subscribe(m, true),
                "UNSUBSCRIBE" => Command::Subscribe(m, false),
                _ => Command::GetQuotaRoot(m),
            }
        }
        "GETQUOTA" => {
            c.sp()?;
            Command::GetQuota(c.astring_utf8()?)
        }
        "RENAME" => {
            c.sp()?;
            let a = c.mailbox()?;
            c.sp()?;
            let b = c.mailbox()?;
            Command::Rename(a, b)
        }
        "SELECT" | "EXAMINE" => {
            c.sp()?;
            let mailbox = c.mailbox()?;
            let mut condstore = false;
            if c.eat(b" ") {
                c.expect(b"(", "select parameters")?;
                loop {
                    let p = c.atom()?.to_ascii_uppercase();
                    if p == "CONDSTORE" {
                        condstore = true;
                    } else {
                        return Err("CONDSTORE");
                    }
                    if !c.eat(b" ") {
                        break;
                    }
                }
                c.expect(b")", "')'")?;
            }
            Command::Select {
                mailbox,
                read_only: name == "EXAMINE",
                condstore,
            }
        }
        "FETCH" => fetch(c, false)?,
        "STORE" => store(c, false)?,
        "SEARCH" => search(c, false)?,
        "COPY" | "MOVE" => copy(c, false, name == "MOVE")?,
        "EXPUNGE" => Command::Expunge(None),
        "UID" => {
            c.sp()?;
            let sub = c.atom()?.to_ascii_uppercase();
            match sub.as_str() {
                "FETCH" => fetch(c, true)?,
                "STORE" => store(c, true)?,
                "SEARCH" => search(c, true)?,
                "COPY" | "MOVE" => copy(c, true, sub == "MOVE")?,
                "EXPUNGE" => {
                    c.sp()?;
                    Command::Expunge(Some(c.seq_set()?))
                }
                _ => return Err("UID FETCH|STORE|SEARCH|COPY|MOVE|EXPUNGE"),
            }
        }
        "APPEND" => {
            c.sp()?;
            let mailbox = c.mailbox()?;
            c.sp()?;
            let mut flags = Vec::new();
            if c.peek() == Some(b'(') {
                flags = c.flag_list()?;
                c.sp()?;
            }
            let mut date = None;
            if c.peek() == Some(b'"') {
                let s = c.quoted()?;
                date = Some(parse_date_time(&s).ok_or("date-time \"dd-Mon-yyyy hh:mm:ss +zzzz\"")?);
                c.sp()?;
            }
            let message = c.literal()?.to_vec();
            Command::Append {
                mailbox,
                flags,
                date,
                message,
            }
        }
        "COMPRESS" => {
            c.sp()?;
            Command::Compress(c.atom()?.to_ascii_uppercase())
        }
        "GETMETADATA" => {
            c.sp()?;
            let mut max_size = None;
            if c.eat(b"(") {
                loop {
                    let o = c.atom()?.to_ascii_uppercase();
                    c.sp()?;
                    match o.as_str() {
                        "MAXSIZE" => max_size = Some(c.number64()?),
                        "DEPTH" => {
                            let d = c.atom()?;
                            if d != "0" && d != "1" && !d.eq_ignore_ascii_case("infinity") {
                                return Err("DEPTH 0|1|infinity");
                            }
                        }
                        _ => return Err("MAXSIZE or DEPTH"),
                    }
                    if !c.eat(b" ") {
                        break;
                    }
                }
                c.expect(b")", "')'")?;
                c.sp()?;
            }
            let mailbox = c.mailbox()?;
            c.sp()?;
            let mut entries = Vec::new();
            if c.eat(b"(") {
                loop {
                    entries.push(c.entry_name()?);
                    if !c.eat(b" ") {
                        break;
                    }
                }
                c.expect(b")", "')'")?;
            } else {
                entries.push(c.entry_name()?);
            }
            Command::GetMetadata {
                mailbox,
                max_size,
                entries,
            }
        }
        "SETMETADATA" => {
            c.sp()?;
            let mailbox = c.mailbox()?;
            c.sp()?;
            c.expect(b"(", "(entry value ...)")?;
            let mut entries = Vec::new();
            loop {
                let e = c.entry_name()?;
                c.sp()?;
                let v = c.nstring()?;
                entries.push((e, v));
                if !c.eat(b" ") {
                    break;
                }
            }
            c.expect(b")", "')'")?;
            Command::SetMetadata { mailbox, entries }
        }
        _ => return Err("a known command"),
    };
    c.crlf()?;
    Ok(cmd)
}

fn fetch(c: &mut Cursor<'_>, uid: bool) -> R<Command> {
    c.sp()?;
    let set = c.seq_set()?;
    c.sp()?;
    let mut items = Vec::new();
    if c.eat(b"(") {
        loop {
            fetch_att(c, &mut items)?;
            if !c.eat(b" ") {
                break;
            }
        }
        c.expect(b")", "')'")?;
    } else {
        fetch_att(c, &mut items)?;
    }
    let mut changed_since = None;
    if c.eat(b" ") {
        c.expect(b"(", "(CHANGEDSINCE n)")?;
        c.expect_ci(b"CHANGEDSINCE", "CHANGEDSINCE")?;
        c.sp()?;
        changed_since = Some(c.number64()?);
        c.expect(b")", "')'")?;
    }
    Ok(Command::Fetch {
        uid,
        set,
        items,
        changed_since,
    })
}

fn fetch_att(c: &mut Cursor<'_>, items: &mut Vec<FetchItem>) -> R<()> {
    let name = c
        .take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        .to_ascii_uppercase();
    let item = match name.as_str() {
        "ALL" | "FAST" | "FULL" => {
            items.extend([
                FetchItem::Flags,
                FetchItem::InternalDate,
                FetchItem::Rfc822Size,
            ]);
            if name != "FAST" {
                items.push(FetchItem::Envelope);
            }
            if name == "FULL" {
                items.push(FetchItem::Body);
            }
            return Ok(());
        }
        "FLAGS" => FetchItem::Flags,
        "UID" => FetchItem::Uid,
        "RFC822.SIZE" => FetchItem::Rfc822Size,
        "INTERNALDATE" => FetchItem::InternalDate,
        "ENVELOPE" => FetchItem::Envelope,
        "BODYSTRUCTURE" => FetchItem::BodyStructure,
        "RFC822" => FetchItem::Rfc822,
        "RFC822.HEADER" => FetchItem::Rfc822Header,
        "RFC822.TEXT" => FetchItem::Rfc822Text,
        "MODSEQ" => FetchItem::ModSeq,
        "BODY" | "BODY.PEEK" => {
            if c.peek() != Some(b'[') {
                if name == "BODY" {
                    FetchItem::Body
                } else {
                    return Err("BODY.PEEK[section]");
                }
            } else {
                c.expect(b"[", "'['")?;
                let section = section(c)?;
                c.expect(b"]", "']'")?;
                let mut partial = None;
                if c.eat(b"<") {
                    let o = c.number()?;
                    c.expect(b".", "<offset.count>")?;
                    let n = c.number()?;
                    if n == 0 {
                        return Err("nonzero partial count");
                    }
                    c.expect(b">", "'>'")?;
                    partial = Some((o, n));
                }
                FetchItem::Section {
                    peek: name == "BODY.PEEK",
                    section,
                    partial,
                }
            }
        }
        _ => return Err("fetch attribute"),
    };
    items.push(item);
    Ok(())
}

fn section(c: &mut Cursor<'_>) -> R<Section> {
    let mut part = Vec::new();
    while c.peek().is_some_and(|b| b.is_ascii_digit()) {
        let n = c.number()?;
        if n == 0 {
            return Err("nonzero part number");
        }
        part.push(n);
        if !c.eat(b".") {
            return Ok(Section {
                part,
                kind: SectionKind::Full,
            });
        }
    }
    if c.peek() == Some(b']') {
        if !part.is_empty() {
            return Err("section text after '.'");
        }
        return Ok(Section {
            part,
            kind: SectionKind::Full,
        });
    }
    let word = c
        .take_while(|b| b.is_ascii_alphabetic() || b == b'.')
        .to_ascii_uppercase();
    let kind = match word.as_str() {
        "HEADER" => SectionKind::Header,
        "TEXT" => SectionKind::Text,
        "MIME" if !part.is_empty() => SectionKind::Mime,
        "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
            c.sp()?;
            c.expect(b"(", "(header names)")?;
            let mut names = Vec::new();
            loop {
                names.push(c.astring_utf8()?);
                if !c.eat(b" ") {
                    break;
                }
            }
            c.expect(b")", "')'")?;
            if word == "HEADER.FIELDS" {
                SectionKind::HeaderFields(names)
            } else {
                SectionKind::HeaderFieldsNot(names)
            }
        }
        _ => return Err("HEADER, TEXT, MIME or HEADER.FIELDS"),
    };
    Ok(Section { part, kind })
}

fn store(c: &mut Cursor<'_>, uid: bool) -> R<Command> {
    c.sp()?;
    let set = c.seq_set()?;
    c.sp()?;
    let mut unchanged_since = None;
    if c.eat(b"(") {
        c.expect_ci(b"UNCHANGEDSINCE", "UNCHANGEDSINCE")?;
        c.sp()?;
        unchanged_since = Some(c.number64()?);
        c.expect(b")", "')'")?;
        c.sp()?;
    }
    let what = c
        .take_while(|b| b.is_ascii_alphabetic() || b == b'.' || b == b'+' || b == b'-')
        .to_ascii_uppercase();
    let (mode, silent) = match what.as_str() {
        "FLAGS" => (FlagMode::Replace, false),
        "FLAGS.SILENT" => (FlagMode::Replace, true),
        "+FLAGS" => (FlagMode::Add, false),
        "+FLAGS.SILENT" => (FlagMode::Add, true),
        "-FLAGS" => (FlagMode::Remove, false),
        "-FLAGS.SILENT" => (FlagMode::Remove, true),
        _ => return Err("[+-]FLAGS[.SILENT]"),
    };
    c.sp()?;
    let flags = if c.peek() == Some(b'(') {
        c.flag_list()?
    } else {
        let mut v = vec![c.flag()?];
        while c.eat(b" ") {
            v.push(c.flag()?);
        }
        v
    };
    Ok(Command::Store {
        uid,
        set,
        mode,
        silent,
        flags,
        unchanged_since,
    })
}

fn copy(c: &mut Cursor<'_>, uid: bool, is_move: bool) -> R<Command> {
    c.sp()?;
    let set = c.seq_set()?;
    c.sp()?;
    let mailbox = c.mailbox()?;
    Ok(Command::Copy {
        uid,
        is_move,
        set,
        mailbox,
    })
}

fn search(c: &mut Cursor<'_>, uid: bool) -> R<Command> {
    let mut keys = Vec::new();
    c.sp()?;
    // Optional CHARSET: only UTF-8 and US-ASCII.
    let save = c.pos;
    if c.eat_ci(b"CHARSET ") {
        let cs = c.astring_utf8()?.to_ascii_uppercase();
        if cs != "UTF-8" && cs != "US-ASCII" {
            return Err("CHARSET UTF-8");
        }
        c.sp()?;
    } else {
        c.pos = save;
    }
    loop {
        keys.push(search_key(c, 0)?);
        if !c.eat(b" ") {
            break;
        }
    }
    let key = if keys.len() == 1 {
        keys.pop().ok_or("search key")?
    } else {
        SearchKey::And(keys)
    };
    Ok(Command::Search { uid, key })
}

fn search_key(c: &mut Cursor<'_>, depth: u32) -> R<SearchKey> {
    if depth > 32 {
        return Err("less nesting");
    }
    if c.eat(b"(") {
        let mut keys = Vec::new();
        loop {
            keys.push(search_key(c, depth + 1)?);
            if !c.eat(b" ") {
                break;
            }
        }
        c.expect(b")", "')'")?;
        return Ok(SearchKey::And(keys));
    }
    if c.peek()
        .is_some_and(|b| b.is_ascii_digit() || b == b'*' || b == b'$')
    {
        return Ok(SearchKey::Seq(c.seq_set()?));
    }
    let word = c.atom()?.to_ascii_uppercase();
    let key = match word.as_str() {
        "ALL" => SearchKey::All,
        "SEEN" => SearchKey::Flag(Flag::Seen),
        "UNSEEN" => SearchKey::NotFlag(Flag::Seen),
        "DELETED" => SearchKey::Flag(Flag::Deleted),
        "UNDELETED" => SearchKey::NotFlag(Flag::Deleted),
        "FLAGGED" => SearchKey::Flag(Flag::Flagged),
        "UNFLAGGED" => SearchKey::NotFlag(Flag::Flagged),
        "ANSWERED" => SearchKey::Flag(Flag::Answered),
        "UNANSWERED" => SearchKey::NotFlag(Flag::Answered),
        "DRAFT" => SearchKey::Flag(Flag::Draft),
        "UNDRAFT" => SearchKey::NotFlag(Flag::Draft),
        "RECENT" => SearchKey::Recent(true),
        "NEW" => SearchKey::And(vec![
            SearchKey::Recent(true),
            SearchKey::NotFlag(Flag::Seen),
        ]),
        "OLD" => SearchKey::Recent(false),
        "KEYWORD" | "UNKEYWORD" => {
            c.sp()?;
            let f = Flag::Keyword(c.atom()?);
            if word == "KEYWORD" {
                SearchKey::Flag(f)
            } else {
                SearchKey::NotFlag(f)
            }
        }
        "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
            c.sp()?;
            let s = c.astring_utf8()?;
            let day = parse_date(&s).ok_or("date dd-Mon-yyyy")?;
            match word.as_str() {
                "BEFORE" => SearchKey::Before(day),
                "ON" => SearchKey::On(day),
                "SINCE" => SearchKey::Since(day),
                "SENTBEFORE" => SearchKey::SentBefore(day),
                "SENTON" => SearchKey::SentOn(day),
                _ => SearchKey::SentSince(day),
            }
        }
        "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => {
            c.sp()?;
            SearchKey::Header(word.to_ascii_lowercase(), c.astring_utf8()?)
        }
        "HEADER" => {
            c.sp()?;
            let n = c.astring_utf8()?.to_ascii_lowercase();
            c.sp()?;
            SearchKey::Header(n, c.astring_utf8()?)
        }
        "BODY" => {
            c.sp()?;
            SearchKey::Body(c.astring_utf8()?)
        }
        "TEXT" => {
            c.sp()?;
            SearchKey::Text(c.astring_utf8()?)
        }
        "LARGER" => {
            c.sp()?;
            SearchKey::Larger(c.number()?)
        }
        "SMALLER" => {
            c.sp()?;
            SearchKey::Smaller(c.number()?)
        }
        "UID" => {
            c.sp()?;
            SearchKey::Uid(c.seq_set()?)
        }
        "MODSEQ" => {
            c.sp()?;
            // Optional entry-name and entry-type-req.
            if c.peek() == Some(b'"') {
                c.quoted()?;
                c.sp()?;
                c.atom()?;
                c.sp()?;
            }
            SearchKey::ModSeq(c.number64()?)
        }
        "NOT" => {
            c.sp()?;
            SearchKey::Not(Box::new(search_key(c, depth + 1)?))
        }
        "OR" => {
            c.sp()?;
            let a = search_key(c, depth + 1)?;
            c.sp()?;
            let b = search_key(c, depth + 1)?;
            SearchKey::Or(Box::new(a), Box::new(b))
        }
        _ => return Err("search key"),
    };
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use crate::imap::command::types::STAR;
    use crate::imap::command::SeqSet;

    fn p(s: &str) -> Command {
        let (_, c) = parse(format!("{s}\r\n").as_bytes()).unwrap_or_else(|e| panic!("{s}: {e:?}"));
        c
    }

    fn bad(s: &str) -> ParseError {
        parse(format!("{s}\r\n").as_bytes()).unwrap_err()
    }

    #[test]
    fn basic_commands() {
        assert_eq!(p("a CAPABILITY"), Command::Capability);
        assert_eq!(p("a noop"), Command::Noop);
        assert_eq!(
            p("a LOGIN bob \"p w\""),
            Command::Login("bob".into(), "p w".into())
        );
        assert_eq!(
            p("a LOGIN {3+}\r\nbob pw"),
            Command::Login("bob".into(), "pw".into())
        );
        assert_eq!(
            p("a AUTHENTICATE PLAIN AGJvYgBwdw=="),
            Command::Authenticate("PLAIN".into(), Some("AGJvYgBwdw==".into()))
        );
        assert_eq!(
            p("a select inbox"),
            Command::Select {
                mailbox: "INBOX".into(),
                read_only: false,
                condstore: false
            }
        );
        assert_eq!(
            p("a EXAMINE Sent (CONDSTORE)"),
            Command::Select {
                mailbox: "Sent".into(),
                read_only: true,
                condstore: true
            }
        );
        assert_eq!(
            p("a ID (\"name\" \"dc\" \"version\" {1}\r\n1)"),
            Command::Id
        );
        assert_eq!(p("a ID NIL"), Command::Id);
        assert_eq!(
            p("a ENABLE CONDSTORE"),
            Command::Enable(vec!["CONDSTORE".into()])
        );
        assert_eq!(
            p("a LIST \"\" *"),
            Command::List {
                lsub: false,
                reference: "".into(),
                pattern: "*".into()
            }
        );
        assert_eq!(
            p("a UID EXPUNGE 1:3,5"),
            Command::Expunge(Some(SeqSet(vec![(1, 3), (5, 5)])))
        );
    }

    #[test]
    fn fetch_items() {
        let Command::Fetch { uid, set, items, changed_since } =
            p("a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100> BODY[1.2.MIME] BODY[] MODSEQ) (CHANGEDSINCE 5)")
        else {
            panic!()
        };
        assert!(uid);
        assert_eq!(set, SeqSet(vec![(1, STAR)]));
        assert_eq!(changed_since, Some(5));
        assert_eq!(
            items,
            vec![
                FetchItem::Flags,
                FetchItem::Section {
                    peek: true,
                    section: Section {
                        part: vec![],
                        kind: SectionKind::HeaderFields(vec!["From".into(), "To".into()])
                    },
                    partial: Some((0, 100))
                },
                FetchItem::Section {
                    peek: false,
                    section: Section {
                        part: vec![1, 2],
                        kind: SectionKind::Mime
                    },
                    partial: None
                },
                FetchItem::Section {
                    peek: false,
                    section: Section {
                        part: vec![],
                        kind: SectionKind::Full
                    },
                    partial: None
                },
                FetchItem::ModSeq,
            ]
        );
        let Command::Fetch { items, .. } = p("a FETCH 1 FAST") else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        assert!(matches!(p("a FETCH 2 BODY[3]"), Command::Fetch { .. }));
    }

    #[test]
    fn store_and_search() {
        assert_eq!(
            p("a UID STORE 3 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Seen $x)"),
            Command::Store {
                uid: true,
                set: SeqSet(vec![(3, 3)]),
                mode: FlagMode::Add,
                silent: true,
                flags: vec![Flag::Seen, Flag::Keyword("$x".into())],
                unchanged_since: Some(7)
            }
        );
        assert_eq!(
            p("a SEARCH OR SEEN (FROM \"bob\" LARGER 5) NOT UID 4:*"),
            Command::Search {
                uid: false,
                key: SearchKey::And(vec![
                    SearchKey::Or(
                        Box::new(SearchKey::Flag(Flag::Seen)),
                        Box::new(SearchKey::And(vec![
                            SearchKey::Header("from".into(), "bob".into()),
                            SearchKey::Larger(5)
                        ]))
                    ),
                    SearchKey::Not(Box::new(SearchKey::Uid(SeqSet(vec![(4, STAR)]))))
                ])
            }
        );
        assert!(matches!(
            p("a SEARCH CHARSET UTF-8 SINCE 1-Feb-2024 HEADER Chat-Version 1.0"),
            Command::Search { .. }
        ));
    }

    #[test]
    fn append_and_metadata() {
        assert_eq!(
            p("a APPEND Sent (\\Seen) \"01-Jan-2020 00:00:00 +0100\" {3+}\r\nabc"),
            Command::Append {
                mailbox: "Sent".into(),
                flags: vec![Flag::Seen],
                date: Some(1_577_833_200),
                message: b"abc".to_vec()
            }
        );
        assert_eq!(
            p("a SETMETADATA INBOX (/private/devicetoken \"tok\" /shared/x NIL)"),
            Command::SetMetadata {
                mailbox: "INBOX".into(),
                entries: vec![
                    ("/private/devicetoken".into(), Some(b"tok".to_vec())),
                    ("/shared/x".into(), None)
                ]
            }
        );
        assert_eq!(
            p("a GETMETADATA (MAXSIZE 100 DEPTH 0) \"\" (/shared/vendor/deltachat/irohrelay /private/a)"),
            Command::GetMetadata {
                mailbox: "".into(),
                max_size: Some(100),
                entries: vec!["/shared/vendor/deltachat/irohrelay".into(), "/private/a".into()]
            }
        );
    }

    #[test]
    fn errors_are_errors() {
        assert_eq!(bad("a FOO").expected, "a known command");
        assert_eq!(bad("a FOO").tag.as_deref(), Some("a"));
        assert_eq!(bad("").tag, None);
        assert!(bad("a FETCH 0 FLAGS").expected.contains("nonzero"));
        assert!(bad("a LOGIN \"\u{ff}").expected.contains('"'));
        assert!(parse(b"a LOGIN \"\xff\xfe\" x\r\n").is_err());
        assert!(parse(b"a NOOP extra\r\n").is_err());
        assert!(parse(b"a SETMETADATA INBOX (/foo x)\r\n").is_err());
    }
}
