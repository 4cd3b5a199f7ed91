//! What a parsed IMAP command is: [`Command`] and the values its arguments parse to.

use crate::store::{Flag, FlagMode};

/// `*` in a sequence set: the largest number in use. Only `*` means that (RFC 3501 §9
/// `seq-number`): an explicit `4294967295` is that number, and `0` is never a valid one.
pub const STAR: u32 = 0;

/// A sequence set: ranges `(a, b)` with [`STAR`] standing for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(u32, u32)>);

impl SeqSet {
    /// Whether `n` is in the set, with `*` = `max`.
    pub fn contains(&self, n: u32, max: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let a = if a == STAR { max } else { a };
            let b = if b == STAR { max } else { b };
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
    /// `RECENT` (true) / `OLD` (false); `NEW` is `RECENT UNSEEN`.
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
