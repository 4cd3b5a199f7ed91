//! IMAP command parser: one framed command (see `frame`) in, one [`Command`] out.
//!
//! Hand-written over `&[u8]` with a small cursor (house style §3.4) rather than imap-codec's
//! `CommandCodec`: the chatmail subset needs QUOTA, COMPRESS, UID EXPUNGE, MOVE, STORE
//! UNCHANGEDSINCE, FETCH CHANGEDSINCE, METADATA and SEARCH MODSEQ in one grammar with exact error
//! texts, and a single parser for all of them is smaller than converting imap-codec's types plus
//! hand-written fallbacks. Errors carry the expected grammar as `&'static str` and become `BAD`
//! in one place (the session). Never panics on any input.

use crate::store::{Flag, FlagMode};

/// A parse error: what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The command's tag if it could be read.
    pub tag: Option<String>,
    /// What the parser expected.
    pub expected: &'static str,
}

/// A sequence set: ranges `(a, b)` with `u32::MAX` standing for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(u32, u32)>);

impl SeqSet {
    /// Whether `n` is in the set, with `*` = `max`.
    pub fn contains(&self, n: u32, max: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let a = if a == u32::MAX { max } else { a };
            let b = if b == u32::MAX { max } else { b };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            n >= lo && n <= hi
        })
    }
}

/// A body section spec: `BODY[1.2.HEADER.FIELDS (From)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Part numbers (`1.2` = `[1, 2]`), empty for the whole message.
    pub part: Vec<u32>,
    /// What of the part.
    pub kind: SectionKind,
}

/// The text part of a section spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionKind {
    /// The whole part (`BODY[]`, `BODY[1]`).
    Full,
    /// `HEADER`
    Header,
    /// `HEADER.FIELDS (..)`
    HeaderFields(Vec<String>),
    /// `HEADER.FIELDS.NOT (..)`
    HeaderFieldsNot(Vec<String>),
    /// `TEXT`
    Text,
    /// `MIME`
    Mime,
}

/// One FETCH data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    /// `FLAGS`
    Flags,
    /// `UID`
    Uid,
    /// `RFC822.SIZE`
    Rfc822Size,
    /// `INTERNALDATE`
    InternalDate,
    /// `ENVELOPE`
    Envelope,
    /// `BODYSTRUCTURE`
    BodyStructure,
    /// `BODY` (non-extensible structure)
    Body,
    /// `BODY[..]` / `BODY.PEEK[..]`
    Section {
        /// `.PEEK`
        peek: bool,
        /// Which section.
        section: Section,
        /// `<offset.count>`
        partial: Option<(u32, u32)>,
    },
    /// `RFC822` (sets \Seen)
    Rfc822,
    /// `RFC822.HEADER`
    Rfc822Header,
    /// `RFC822.TEXT` (sets \Seen)
    Rfc822Text,
    /// `MODSEQ`
    ModSeq,
}

/// A SEARCH key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    /// `ALL`
    All,
    /// A sequence set.
    Seq(SeqSet),
    /// `UID set`
    Uid(SeqSet),
    /// A flag is set (`SEEN`, `KEYWORD x`, ...).
    Flag(Flag),
    /// A flag is not set (`UNSEEN`, `UNKEYWORD x`, ...).
    NotFlag(Flag),
    /// `NEW` / `OLD` / `RECENT`: recent is never set here.
    Recent(bool),
    /// INTERNALDATE day before (unix day number).
    Before(i64),
    /// INTERNALDATE on day.
    On(i64),
    /// INTERNALDATE on or after day.
    Since(i64),
    /// Date: header day before.
    SentBefore(i64),
    /// Date: header on day.
    SentOn(i64),
    /// Date: header on or after day.
    SentSince(i64),
    /// `HEADER name value` (FROM/TO/CC/BCC/SUBJECT are mapped to it).
    Header(String, String),
    /// `BODY x`
    Body(String),
    /// `TEXT x`
    Text(String),
    /// `LARGER n`
    Larger(u32),
    /// `SMALLER n`
    Smaller(u32),
    /// `MODSEQ n` (entry names ignored).
    ModSeq(u64),
    /// `NOT key`
    Not(Box<SearchKey>),
    /// `OR a b`
    Or(Box<SearchKey>, Box<SearchKey>),
    /// A parenthesized list, or the top level: all must match.
    And(Vec<SearchKey>),
}

/// STATUS data items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    /// `MESSAGES`
    Messages,
    /// `UIDNEXT`
    UidNext,
    /// `UIDVALIDITY`
    UidValidity,
    /// `UNSEEN`
    Unseen,
    /// `RECENT`
    Recent,
    /// `HIGHESTMODSEQ`
    HighestModSeq,
    /// `SIZE`
    Size,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CAPABILITY`
    Capability,
    /// `NOOP`
    Noop,
    /// `LOGOUT`
    Logout,
    /// `STARTTLS`
    StartTls,
    /// `LOGIN user pass`
    Login(String, String),
    /// `AUTHENTICATE mech [initial]`
    Authenticate(String, Option<String>),
    /// `ENABLE caps..`
    Enable(Vec<String>),
    /// `ID (...)` or `ID NIL`
    Id,
    /// `NAMESPACE`
    Namespace,
    /// `LIST ref pattern` / `LSUB ref pattern`
    List {
        /// LSUB instead of LIST.
        lsub: bool,
        /// Reference name.
        reference: String,
        /// Mailbox pattern.
        pattern: String,
    },
    /// `STATUS mailbox (items)`
    Status(String, Vec<StatusItem>),
    /// `CREATE`
    Create(String),
    /// `DELETE`
    Delete(String),
    /// `RENAME from to`
    Rename(String, String),
    /// `SUBSCRIBE` (true) / `UNSUBSCRIBE` (false)
    Subscribe(String, bool),
    /// `SELECT` / `EXAMINE`
    Select {
        /// Mailbox.
        mailbox: String,
        /// EXAMINE.
        read_only: bool,
        /// `(CONDSTORE)`
        condstore: bool,
    },
    /// `FETCH` / `UID FETCH`
    Fetch {
        /// UID variant.
        uid: bool,
        /// Messages.
        set: SeqSet,
        /// Items.
        items: Vec<FetchItem>,
        /// `(CHANGEDSINCE n)`
        changed_since: Option<u64>,
    },
    /// `STORE` / `UID STORE`
    Store {
        /// UID variant.
        uid: bool,
        /// Messages.
        set: SeqSet,
        /// How.
        mode: FlagMode,
        /// `.SILENT`
        silent: bool,
        /// Flags.
        flags: Vec<Flag>,
        /// `(UNCHANGEDSINCE n)`
        unchanged_since: Option<u64>,
    },
    /// `SEARCH` / `UID SEARCH`
    Search {
        /// UID variant.
        uid: bool,
        /// All keys (AND).
        key: SearchKey,
    },
    /// `COPY` / `MOVE` (and UID variants)
    Copy {
        /// UID variant.
        uid: bool,
        /// MOVE.
        is_move: bool,
        /// Messages.
        set: SeqSet,
        /// Target.
        mailbox: String,
    },
    /// `EXPUNGE` / `UID EXPUNGE set`
    Expunge(Option<SeqSet>),
    /// `APPEND mailbox [(flags)] [date] literal`
    Append {
        /// Target.
        mailbox: String,
        /// Flags.
        flags: Vec<Flag>,
        /// INTERNALDATE, unix seconds.
        date: Option<i64>,
        /// The message.
        message: Vec<u8>,
    },
    /// `CHECK`
    Check,
    /// `CLOSE`
    Close,
    /// `UNSELECT`
    Unselect,
    /// `IDLE`
    Idle,
    /// `COMPRESS mech`
    Compress(String),
    /// `GETQUOTAROOT mailbox`
    GetQuotaRoot(String),
    /// `GETQUOTA root`
    GetQuota(String),
    /// `GETMETADATA [(opts)] mailbox entries`
    GetMetadata {
        /// Mailbox (`""` for server entries).
        mailbox: String,
        /// `MAXSIZE n`
        max_size: Option<u64>,
        /// Entry names (lowercased).
        entries: Vec<String>,
    },
    /// `SETMETADATA mailbox (entry value ...)`
    SetMetadata {
        /// Mailbox (`""` for server entries).
        mailbox: String,
        /// `(entry, value)`; `None` deletes.
        entries: Vec<(String, Option<Vec<u8>>)>,
    },
}

impl Command {
    /// The command's name for `BAD`/`OK` texts.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Capability => "Capability",
            Command::Noop => "NOOP",
            Command::Logout => "Logout",
            Command::StartTls => "STARTTLS",
            Command::Login(..) => "Login",
            Command::Authenticate(..) => "Authenticate",
            Command::Enable(_) => "Enable",
            Command::Id => "ID",
            Command::Namespace => "Namespace",
            Command::List { lsub: false, .. } => "List",
            Command::List { lsub: true, .. } => "Lsub",
            Command::Status(..) => "Status",
            Command::Create(_) => "Create",
            Command::Delete(_) => "Delete",
            Command::Rename(..) => "Rename",
            Command::Subscribe(_, true) => "Subscribe",
            Command::Subscribe(_, false) => "Unsubscribe",
            Command::Select {
                read_only: false, ..
            } => "Select",
            Command::Select {
                read_only: true, ..
            } => "Examine",
            Command::Fetch { .. } => "Fetch",
            Command::Store { .. } => "Store",
            Command::Search { .. } => "Search",
            Command::Copy { is_move: false, .. } => "Copy",
            Command::Copy { is_move: true, .. } => "Move",
            Command::Expunge(_) => "Expunge",
            Command::Append { .. } => "Append",
            Command::Check => "Check",
            Command::Close => "Close",
            Command::Unselect => "Unselect",
            Command::Idle => "Idle",
            Command::Compress(_) => "Compress",
            Command::GetQuotaRoot(_) => "Getquotaroot",
            Command::GetQuota(_) => "Getquota",
            Command::GetMetadata { .. } => "Getmetadata",
            Command::SetMetadata { .. } => "Setmetadata",
        }
    }
}

/// Parse one framed command (with its CRLF). Returns the tag and the command.
pub fn parse(input: &[u8]) -> Result<(String, Command), ParseError> {
    let mut c = Cursor { buf: input, pos: 0 };
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

type R<T> = Result<T, &'static str>;

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
        "NEW" | "RECENT" => SearchKey::Recent(true),
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

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `1-Feb-1994` → day number.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().split('-');
    let d: u32 = it.next()?.trim().parse().ok()?;
    let mon = it.next()?;
    let m = MONTHS
        .iter()
        .position(|x| x.eq_ignore_ascii_case(mon))
        .map(|i| i as u32 + 1)?;
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `17-Jul-1996 02:44:25 -0700` → unix seconds.
pub fn parse_date_time(s: &str) -> Option<i64> {
    let (date, rest) = s.trim_start().split_once(' ')?;
    let day = parse_date(date)?;
    let (time, zone) = rest.split_once(' ')?;
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let se: i64 = t.next()?.parse().ok()?;
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let zb = zone.as_bytes();
    if zb.len() != 5 || !(zb[0] == b'+' || zb[0] == b'-') || !zb[1..].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let off = (zh * 60 + zm) * 60 * if zb[0] == b'-' { -1 } else { 1 };
    Some(day * 86400 + h * 3600 + mi * 60 + se - off)
}

/// Unix seconds → `"17-Jul-1996 02:44:25 +0000"` (quoted).
pub fn format_date_time(secs: i64) -> String {
    let day = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(day);
    format!(
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        d,
        MONTHS[(m - 1) as usize],
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Byte cursor over one command.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b"(){ %*\"\\]".contains(&b)
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn eat(&mut self, s: &[u8]) -> bool {
        if self.buf[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn eat_ci(&mut self, s: &[u8]) -> bool {
        let rest = &self.buf[self.pos..];
        if rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &[u8], what: &'static str) -> R<()> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(what)
        }
    }

    fn expect_ci(&mut self, s: &[u8], what: &'static str) -> R<()> {
        if self.eat_ci(s) {
            Ok(())
        } else {
            Err(what)
        }
    }

    fn sp(&mut self) -> R<()> {
        self.expect(b" ", "SP")
    }

    fn crlf(&mut self) -> R<()> {
        if self.pos + 2 == self.buf.len() && self.eat(b"\r\n") {
            Ok(())
        } else {
            Err("end of command")
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // Only ASCII predicates are used, so this is valid UTF-8.
        std::str::from_utf8(&self.buf[start..self.pos]).unwrap_or("")
    }

    fn tag(&mut self) -> R<String> {
        let t = self.take_while(|b| is_atom_char(b) && b != b'+');
        if t.is_empty() {
            return Err("tag");
        }
        Ok(t.to_owned())
    }

    fn atom(&mut self) -> R<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("atom");
        }
        Ok(a.to_owned())
    }

    fn number(&mut self) -> R<u32> {
        let d = self.take_while(|b| b.is_ascii_digit());
        d.parse().map_err(|_| "number")
    }

    fn number64(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        d.parse().map_err(|_| "number")
    }

    fn quoted(&mut self) -> R<String> {
        self.expect(b"\"", "quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("closing '\"'"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b @ (b'"' | b'\\')) => {
                            out.push(b);
                            self.pos += 1;
                        }
                        _ => return Err("quoted-special after '\\'"),
                    }
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "UTF-8")
    }

    fn literal(&mut self) -> R<&'a [u8]> {
        self.expect(b"{", "literal")?;
        let n = self.number()? as usize;
        self.eat(b"+");
        self.expect(b"}\r\n", "literal")?;
        if self.buf.len() - self.pos < n {
            return Err("literal data");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// astring as raw bytes (atom chars incl. `]`, quoted or literal).
    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => Ok(self.quoted()?.into_bytes()),
            Some(b'{') => Ok(self.literal()?.to_vec()),
            _ => {
                let a = self.take_while(|b| is_atom_char(b) || b == b']');
                if a.is_empty() {
                    return Err("astring");
                }
                Ok(a.as_bytes().to_vec())
            }
        }
    }

    fn astring_utf8(&mut self) -> R<String> {
        String::from_utf8(self.astring()?).map_err(|_| "UTF-8")
    }

    fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        match self.peek() {
            Some(b'"') => Ok(Some(self.quoted()?.into_bytes())),
            Some(b'{') => Ok(Some(self.literal()?.to_vec())),
            _ => {
                if self.eat_ci(b"NIL") {
                    Ok(None)
                } else {
                    Err("string or NIL")
                }
            }
        }
    }

    fn mailbox(&mut self) -> R<String> {
        let m = self.astring_utf8()?;
        if m.eq_ignore_ascii_case("INBOX") {
            Ok("INBOX".into())
        } else {
            Ok(m)
        }
    }

    fn list_mailbox(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.astring_utf8(),
            _ => {
                let a = self.take_while(|b| {
                    (is_atom_char(b) || b == b'%' || b == b'*' || b == b']') && b != b'('
                });
                if a.is_empty() {
                    return Err("list-mailbox");
                }
                Ok(a.to_owned())
            }
        }
    }

    fn entry_name(&mut self) -> R<String> {
        let e = self.astring_utf8()?.to_ascii_lowercase();
        if !(e.starts_with("/private/") || e.starts_with("/shared/"))
            || e.ends_with('/')
            || e.contains("//")
            || e.contains('*')
            || e.contains('%')
        {
            return Err("entry name /private/.. or /shared/..");
        }
        Ok(e)
    }

    fn flag(&mut self) -> R<Flag> {
        if self.eat(b"\\") {
            let a = self.atom()?.to_ascii_uppercase();
            return match a.as_str() {
                "SEEN" => Ok(Flag::Seen),
                "ANSWERED" => Ok(Flag::Answered),
                "FLAGGED" => Ok(Flag::Flagged),
                "DELETED" => Ok(Flag::Deleted),
                "DRAFT" => Ok(Flag::Draft),
                _ => Err("system flag"),
            };
        }
        Ok(Flag::Keyword(self.atom()?))
    }

    fn flag_list(&mut self) -> R<Vec<Flag>> {
        self.expect(b"(", "flag list")?;
        let mut v = Vec::new();
        if self.eat(b")") {
            return Ok(v);
        }
        loop {
            v.push(self.flag()?);
            if !self.eat(b" ") {
                break;
            }
        }
        self.expect(b")", "')'")?;
        Ok(v)
    }

    fn seq_number(&mut self) -> R<u32> {
        if self.eat(b"*") {
            return Ok(u32::MAX);
        }
        let n = self.number()?;
        if n == 0 {
            return Err("nonzero sequence number");
        }
        Ok(n)
    }

    fn seq_set(&mut self) -> R<SeqSet> {
        let mut v = Vec::new();
        loop {
            let a = self.seq_number()?;
            let b = if self.eat(b":") {
                self.seq_number()?
            } else {
                a
            };
            v.push((a, b));
            if !self.eat(b",") {
                break;
            }
        }
        Ok(SeqSet(v))
    }

    /// Skip a parenthesized list with nested lists, quoted strings and literals.
    fn skip_parenthesized(&mut self) -> R<()> {
        self.expect(b"(", "'('")?;
        let mut depth = 1u32;
        while depth > 0 {
            match self.peek() {
                None => return Err("')'"),
                Some(b'(') => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(b')') => {
                    depth -= 1;
                    self.pos += 1;
                }
                Some(b'"') => {
                    self.quoted()?;
                }
                Some(b'{') => {
                    self.literal()?;
                }
                Some(b'\r') | Some(b'\n') => return Err("')'"),
                Some(_) => self.pos += 1,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

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
        assert_eq!(set, SeqSet(vec![(1, u32::MAX)]));
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
                    SearchKey::Not(Box::new(SearchKey::Uid(SeqSet(vec![(4, u32::MAX)]))))
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

    #[test]
    fn dates() {
        assert_eq!(parse_date("1-Jan-1970"), Some(0));
        assert_eq!(
            parse_date_time("17-Jul-1996 02:44:25 -0700"),
            Some(837_596_665)
        );
        assert_eq!(
            format_date_time(837_596_665),
            "\"17-Jul-1996 09:44:25 +0000\""
        );
        // A multi-byte character inside the zone must not split a char boundary.
        assert_eq!(parse_date_time("1-Jan-2020 00:00:00 +0\u{e9}0"), None);
        for d in [-1000i64, 0, 19_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
