//! IMAP commands: what they are ([`types`]), how one framed command is parsed (`parser`, over
//! the byte `cursor`), and the IMAP date formats (`date`).
//!
//! A new command is a [`Command`] variant here, an arm in `parser`, and a handler in
//! `imap::handler` (see `imap::session` for the dispatch).

mod cursor;
mod date;
mod parser;
pub mod types;

pub use date::{format_date_time, parse_date, parse_date_time};
pub use parser::{parse, ParseError};
pub use types::{Command, FetchItem, SearchKey, Section, SectionKind, SeqSet, StatusItem};
