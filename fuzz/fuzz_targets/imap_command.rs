//! Fuzz the IMAP command parser: the input as one command, and each command the framer cuts
//! from it (as the session parses them). No panic; the tag is the command's first word; nothing
//! returned is larger than the input; an APPEND date survives formatting and parsing again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::imap::command::{format_date_time, parse, parse_date_time, Command};
use relay::imap::frame::{Frame, Framer};

fn check(input: &[u8]) {
    let tag_ok = |tag: &str| {
        assert!(!tag.is_empty());
        assert!(
            input.starts_with(tag.as_bytes()),
            "tag {tag:?} is not the input's start"
        );
    };
    let (tag, cmd) = match parse(input) {
        Ok(ok) => ok,
        Err(e) => {
            assert!(!e.expected.is_empty());
            if let Some(t) = &e.tag {
                tag_ok(t);
            }
            return;
        }
    };
    tag_ok(&tag);
    assert_eq!(input.get(tag.len()), Some(&b' '));
    assert!(!cmd.name().is_empty());
    match &cmd {
        Command::Append { message, date, .. } => {
            assert!(message.len() <= input.len());
            if let Some(d) = *date {
                let text = format_date_time(d);
                let again = parse_date_time(text.trim_matches('"'));
                // Years 1..=9999 parse; an offset may push the UTC date just outside them.
                let year_ok = (-62_135_596_800 + 86_400..253_402_300_800 - 86_400).contains(&d);
                if year_ok {
                    assert_eq!(again, Some(d), "{text} does not parse back");
                } else {
                    assert!(again.is_none() || again == Some(d));
                }
            }
        }
        Command::SetMetadata { entries, .. } => {
            let total: usize = entries
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            assert!(total <= input.len());
        }
        Command::Login(user, pass) => assert!(user.len() + pass.len() <= input.len()),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framer = Framer::new(1 << 20);
    framer.push(data);
    while let Some(frame) = framer.next(false) {
        if let Frame::Command(cmd) = frame {
            check(&cmd);
        }
    }
});
