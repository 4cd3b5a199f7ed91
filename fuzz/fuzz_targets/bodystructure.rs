//! Fuzz the MIME structure walk behind FETCH (`imap::bodystructure`, `imap::fetch`) on arbitrary
//! messages: no panic; every part's ranges nest inside the message and its parent; depth and part
//! count stay bounded; BODYSTRUCTURE, BODY and ENVELOPE are well-formed IMAP lists (balanced
//! parentheses outside quoted strings and literals); every part number resolves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::imap::bodystructure::{envelope, parse, Part};
use relay::imap::command::{Section, SectionKind};
use relay::imap::fetch::section_bytes;

/// Walks `p`, checking its ranges lie in `outer`; returns the number of parts.
fn check_part(p: &Part, outer: &std::ops::Range<usize>, depth: usize) -> usize {
    assert!(depth <= 17, "nesting deeper than the cap");
    assert!(outer.start <= p.header.start && p.header.start <= p.header.end);
    assert!(p.header.end == p.body.start && p.body.start <= p.body.end && p.body.end <= outer.end);
    assert!(!p.subtype.is_empty());
    assert_eq!(p.ctype, p.ctype.to_ascii_lowercase());
    assert_eq!(p.subtype, p.subtype.to_ascii_lowercase());
    let mut n = 1;
    let mut last_end = p.body.start;
    for c in &p.children {
        assert!(c.header.start >= last_end, "child parts overlap");
        last_end = c.body.end;
        n += check_part(c, &p.body, depth + 1);
    }
    if let Some(m) = &p.message {
        assert!(p.children.is_empty());
        n += check_part(m, &p.body, depth + 1);
    }
    n
}

/// `out` is one parenthesized IMAP list: quoted strings and literals skipped, parentheses
/// balanced, the outer list closing at the very end.
fn check_list(out: &[u8]) {
    assert_eq!(
        out.first(),
        Some(&b'('),
        "{:?}",
        String::from_utf8_lossy(out)
    );
    let mut depth = 0usize;
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'"' => {
                i += 1;
                while out[i] != b'"' {
                    assert!(
                        out[i] != b'\r' && out[i] != b'\n',
                        "line break in a quoted string"
                    );
                    i += if out[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => {
                let close = i + out[i..].iter().position(|&b| b == b'}').expect("literal");
                let n: usize = std::str::from_utf8(&out[i + 1..close])
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(&out[close + 1..close + 3], b"\r\n");
                i = close + 2 + n;
                assert!(i < out.len(), "literal runs past the end");
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    assert_eq!(i + 1, out.len(), "text after the outer list");
                }
            }
            b'\r' | b'\n' => panic!("line break outside a literal"),
            _ => {}
        }
        i += 1;
    }
    assert_eq!(depth, 0, "unbalanced list");
}

fuzz_target!(|raw: &[u8]| {
    let root = parse(raw);
    assert_eq!(root.header.start, 0);
    assert_eq!(root.body.end, raw.len());
    let parts = check_part(&root, &(0..raw.len()), 0);
    assert!(parts <= 500, "{parts} parts");
    for extended in [true, false] {
        let mut out = Vec::new();
        root.encode(raw, &mut out, extended);
        check_list(&out);
    }
    let mut env = Vec::new();
    envelope(raw, &raw[root.header.clone()], &mut env);
    check_list(&env);
    // Part numbers: `[i]` is the i-th child; every section of it can be cut out.
    for (i, c) in root.children.iter().enumerate() {
        let path = [i as u32 + 1];
        let r = root.resolve(&path).expect("child resolves");
        assert_eq!((&r.header, &r.body), (&c.header, &c.body));
    }
    let mut path: Vec<u32> = raw.iter().take(4).map(|&b| u32::from(b % 4)).collect();
    loop {
        for kind in [
            SectionKind::Full,
            SectionKind::Header,
            SectionKind::Text,
            SectionKind::Mime,
            SectionKind::HeaderFields(vec!["from".into(), "subject".into()]),
            SectionKind::HeaderFieldsNot(vec!["date".into()]),
        ] {
            let section = Section {
                part: path.clone(),
                kind,
            };
            let bytes = section_bytes(raw, &root, &section);
            assert!(bytes.len() <= raw.len() + 2);
        }
        if path.pop().is_none() {
            break;
        }
    }
});
