//! Number ranges as CNDP writes them in `lcore-groups` and `lport-groups.queues`: `"3"` or `"4-7"`.
//!
//! Both ends are inclusive. A reversed range (`"5-3"`) is an error rather than the empty set CNDP
//! silently produces, because it is always a typo.

use std::ops::RangeInclusive;

/// Parses `"n"` or `"a-b"` (spaces around the numbers allowed) into an inclusive range.
pub(crate) fn parse_range(text: &str) -> Result<RangeInclusive<u32>, String> {
    let number = |part: &str| -> Result<u32, String> {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "\"{text}\" is not a number or a range \"first-last\""
            ));
        }
        part.parse::<u32>()
            .map_err(|_| format!("\"{text}\": {part} is too large"))
    };
    match text.split_once('-') {
        None => {
            let n = number(text)?;
            Ok(n..=n)
        }
        Some((a, b)) => {
            let (first, last) = (number(a)?, number(b)?);
            if first > last {
                return Err(format!(
                    "\"{text}\" is not a valid range: {first} is greater than {last}"
                ));
            }
            Ok(first..=last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singles_and_ranges() {
        assert_eq!(parse_range("3").unwrap(), 3..=3);
        assert_eq!(parse_range("4-7").unwrap(), 4..=7);
        assert_eq!(parse_range(" 10 - 12 ").unwrap(), 10..=12);
        assert_eq!(parse_range("2-2").unwrap(), 2..=2);
    }

    #[test]
    fn rejects_reversed_and_malformed() {
        let e = parse_range("5-3").unwrap_err();
        assert!(e.contains("5 is greater than 3"), "{e}");
        for bad in [
            "",
            "-",
            "a",
            "1-",
            "-1",
            "1-2-3",
            "1 2",
            "+1",
            "0x10",
            "99999999999",
        ] {
            assert!(parse_range(bad).is_err(), "{bad:?} accepted");
        }
    }
}
