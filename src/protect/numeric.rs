//! The checks behind the numeric detectors: phone numbers and card numbers (found in one
//! shared pass over runs of digits and separators) and IBANs. Each check says yes only to
//! shapes that real values have, so years, prices, versions, dates, times and UUIDs pass
//! through untouched (docs/protection.md lists the rules).

use std::ops::Range;

/// Most digits in a phone number (E.164).
const PHONE_MAX_DIGITS: usize = 15;

/// Trims unbalanced parentheses off a numeric run and checks what surrounds it: a run
/// glued to a letter, to `_ . - / \ @ # $ € £ ¥`, or followed by `, . : / -` and then a
/// letter or digit is part of something else (an identifier, a decimal, a time, a path).
pub(crate) fn numeric_run(text: &str, mut r: Range<usize>) -> Option<Range<usize>> {
    let s = &text[r.clone()];
    let opens = s.bytes().filter(|&b| b == b'(').count();
    let closes = s.bytes().filter(|&b| b == b')').count();
    if s.ends_with(')') && closes > opens {
        r.end -= 1;
    } else if s.starts_with('(') && opens > closes {
        r.start += 1;
    }
    let before = text[..r.start].chars().next_back();
    if before.is_some_and(|c| c.is_alphanumeric() || "_.-/\\@#$€£¥+".contains(c)) {
        return None;
    }
    let mut after = text[r.end..].chars();
    match after.next() {
        Some(c) if c.is_alphanumeric() || c == '_' || c == '@' || c == '%' => None,
        Some(c) if ",.:/-".contains(c) && after.next().is_some_and(char::is_alphanumeric) => None,
        _ => Some(r),
    }
}

/// Phone numbers inside a checked numeric run: the longest space-separated sub-run that
/// passes [`is_phone`], leftmost first.
pub(crate) fn phones(text: &str, run: Range<usize>, mut hit: impl FnMut(Range<usize>)) {
    let words = split(text, run, b" ");
    let digits: Vec<usize> = words
        .iter()
        .map(|w| count_digits(&text[w.clone()]))
        .collect();
    let mut s = 0;
    'outer: while s < words.len() {
        let mut e = s;
        let mut total = digits[s];
        while e + 1 < words.len() && total + digits[e + 1] <= PHONE_MAX_DIGITS {
            e += 1;
            total += digits[e];
        }
        loop {
            let span = words[s].start..words[e].end;
            if is_phone(&text[span.clone()]) {
                hit(span);
                s = e + 1;
                continue 'outer;
            }
            if e == s {
                break;
            }
            e -= 1;
        }
        s += 1;
    }
}

/// Is `s` (digits, `+`, `(`, `)`, and single ` `/`.`/`-` separators) a phone number?
/// International: `+` or `00`, then 8–15 digits (exactly 11 for `+1`). National: 7–12 digits shaped like
/// `(area) rest`, a trunk `0` with 9–12 digits (`020 7946 0958`, `06 12 34 56 78`,
/// `0301234567`), or North American `415-555-1234` / `1 415 555 1234` / `555-1234`.
pub(crate) fn is_phone(s: &str) -> bool {
    let intl = s.starts_with('+');
    let body = s.trim_start_matches('+');
    let (mut groups, mut seps, mut depth) = (Vec::new(), Vec::new(), 0u8);
    let mut cur = 0usize;
    for c in body.bytes() {
        match c {
            b'0'..=b'9' => cur += 1,
            _ => {
                if cur > 0 {
                    groups.push(cur);
                    cur = 0;
                }
                match c {
                    b'(' if depth == 0 => depth = 1,
                    b')' if depth == 1 => depth = 0,
                    b' ' | b'.' | b'-' => seps.push(c),
                    _ => return false,
                }
            }
        }
    }
    if cur > 0 {
        groups.push(cur);
    }
    let digits: Vec<u8> = body.bytes().filter(u8::is_ascii_digit).collect();
    let n = digits.len();
    if depth != 0 || n == 0 || digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let one_sep = seps.windows(2).all(|w| w[0] == w[1]);
    if seps.contains(&b'.') && !one_sep {
        return false;
    }
    if intl {
        // +1 (North America) numbers have exactly 11 digits with the country code.
        return if digits[0] == b'1' {
            n == 11
        } else {
            (8..=PHONE_MAX_DIGITS).contains(&n)
        };
    }
    if digits.starts_with(b"00") {
        return (10..=PHONE_MAX_DIGITS).contains(&n);
    }
    if body.starts_with('(') {
        return (7..=12).contains(&n) && groups.len() >= 2 && (2..=5).contains(&groups[0]);
    }
    if digits[0] == b'0' && groups[0] >= 2 {
        return (9..=12).contains(&n);
    }
    // North American numbering: area code and exchange start with 2-9.
    let nxx = |i: usize| digits.get(i).is_some_and(|&d| d >= b'2');
    match groups.as_slice() {
        [3, 3, 4] => one_sep && nxx(0) && nxx(3),
        [1, 3, 3, 4] => one_sep && digits[0] == b'1' && nxx(1) && nxx(4),
        [3, 4] => seps == [b'-'] && nxx(0),
        _ => false,
    }
}

/// Card numbers inside a checked numeric run: 13–19 digits, bare or grouped the way cards
/// are printed (first group 4 digits, middle groups 4 or 6, last 3–6, one kind of
/// separator: space or dash), first digit 2–6 (the card networks'
/// ranges; keeps millisecond timestamps out), Luhn check digit valid. Pieces next to a `.`
/// inside the run are decimals and are skipped.
pub(crate) fn cards(text: &str, run: Range<usize>, mut hit: impl FnMut(Range<usize>)) {
    let b = text.as_bytes();
    let dotted = |i: usize| (run.start..run.end).contains(&i) && b[i] == b'.';
    for piece in split(text, run.clone(), b".()+") {
        if dotted(piece.end) || (piece.start > 0 && dotted(piece.start - 1)) {
            continue;
        }
        let groups = split(text, piece, b" -");
        let mut s = 0;
        'outer: while s < groups.len() {
            let mut e = groups.len() - 1;
            loop {
                let span = groups[s].start..groups[e].end;
                if is_card(&text[span.clone()]) {
                    hit(span);
                    s = e + 1;
                    continue 'outer;
                }
                if e == s {
                    break;
                }
                e -= 1;
            }
            s += 1;
        }
    }
}

fn is_card(s: &str) -> bool {
    let b = s.as_bytes();
    let seps: Vec<u8> = b.iter().copied().filter(|c| !c.is_ascii_digit()).collect();
    if seps.windows(2).any(|w| w[0] != w[1]) {
        return false;
    }
    if !seps.is_empty() {
        let lens: Vec<usize> = s.split([' ', '-']).map(str::len).collect();
        let (first, last) = (lens[0], lens[lens.len() - 1]);
        let middle = &lens[1..lens.len() - 1];
        if first != 4 || !(3..=6).contains(&last) || middle.iter().any(|&l| l != 4 && l != 6) {
            return false;
        }
    }
    let digits: Vec<u8> = b
        .iter()
        .filter(|c| c.is_ascii_digit())
        .map(|c| c - b'0')
        .collect();
    (13..=19).contains(&digits.len()) && (2..=6).contains(&digits[0]) && luhn(&digits)
}

/// The Luhn (mod 10) check over digit values.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// An IBAN at the start of `m` (a regex match of `CC99` followed by alphanumerics and
/// single spaces): exactly the registered length for its country, not glued to a
/// following letter or digit, and ISO 7064 mod-97 == 1.
pub(crate) fn iban(text: &str, m: Range<usize>) -> Option<Range<usize>> {
    let b = &text.as_bytes()[m.clone()];
    let want = iban_len(b.get(..2)?)?;
    let mut chars = Vec::with_capacity(want);
    let mut i = 0;
    while chars.len() < want {
        match *b.get(i)? {
            b' ' => {}
            c => chars.push(c),
        }
        i += 1;
    }
    let end = m.start + i;
    if text[end..]
        .chars()
        .next()
        .is_some_and(char::is_alphanumeric)
    {
        return None;
    }
    (mod97(&chars) == 1).then_some(m.start..end)
}

fn mod97(chars: &[u8]) -> u32 {
    let (head, tail) = chars.split_at(4.min(chars.len()));
    tail.iter().chain(head).fold(0u32, |r, &c| match c {
        b'0'..=b'9' => (r * 10 + u32::from(c - b'0')) % 97,
        b'A'..=b'Z' => (r * 100 + u32::from(c - b'A') + 10) % 97,
        _ => 0,
    })
}

/// Registered IBAN lengths (SWIFT IBAN registry).
#[rustfmt::skip]
fn iban_len(cc: &[u8]) -> Option<usize> {
    const TABLE: &[(&[u8; 2], usize)] = &[
        (b"AD", 24), (b"AE", 23), (b"AL", 28), (b"AT", 20), (b"AZ", 28), (b"BA", 20),
        (b"BE", 16), (b"BG", 22), (b"BH", 22), (b"BI", 27), (b"BR", 29), (b"BY", 28),
        (b"CH", 21), (b"CR", 22), (b"CY", 28), (b"CZ", 24), (b"DE", 22), (b"DJ", 27),
        (b"DK", 18), (b"DO", 28), (b"EE", 20), (b"EG", 29), (b"ES", 24), (b"FI", 18),
        (b"FK", 18), (b"FO", 18), (b"FR", 27), (b"GB", 22), (b"GE", 22), (b"GI", 23),
        (b"GL", 18), (b"GR", 27), (b"GT", 28), (b"HR", 21), (b"HU", 28), (b"IE", 22),
        (b"IL", 23), (b"IQ", 23), (b"IS", 26), (b"IT", 27), (b"JO", 30), (b"KW", 30),
        (b"KZ", 20), (b"LB", 28), (b"LC", 32), (b"LI", 21), (b"LT", 20), (b"LU", 20),
        (b"LV", 21), (b"LY", 25), (b"MC", 27), (b"MD", 24), (b"ME", 22), (b"MK", 19),
        (b"MN", 20), (b"MR", 27), (b"MT", 31), (b"MU", 30), (b"NI", 28), (b"NL", 18),
        (b"NO", 15), (b"OM", 23), (b"PK", 24), (b"PL", 28), (b"PS", 29), (b"PT", 25),
        (b"QA", 29), (b"RO", 24), (b"RS", 22), (b"RU", 33), (b"SA", 24), (b"SC", 31),
        (b"SD", 18), (b"SE", 24), (b"SI", 19), (b"SK", 24), (b"SM", 27), (b"SO", 23),
        (b"ST", 25), (b"SV", 28), (b"TL", 23), (b"TN", 24), (b"TR", 26), (b"UA", 29),
        (b"VA", 22), (b"VG", 24), (b"XK", 20), (b"YE", 30),
    ];
    TABLE.iter().find(|(c, _)| c.as_slice() == cc).map(|&(_, n)| n)
}

/// Splits `r` at any of the `seps` bytes into non-empty sub-ranges.
fn split(text: &str, r: Range<usize>, seps: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = r.start;
    for (i, c) in text.as_bytes()[r.clone()].iter().enumerate() {
        if seps.contains(c) {
            if r.start + i > start {
                out.push(start..r.start + i);
            }
            start = r.start + i + 1;
        }
    }
    if r.end > start {
        out.push(start..r.end);
    }
    out
}

fn count_digits(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}
