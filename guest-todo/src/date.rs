//! Calendar dates as the book writes them: `YYYY-MM-DD`.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A valid calendar date (proleptic Gregorian, years 0001 to 9999).
///
/// In human-readable formats (JSON: storage and the JSON API) a date is its
/// `YYYY-MM-DD` text; in compact ones (postcard, between the front and a
/// list) it is the number `YYYYMMDD`, which costs no formatting or parsing:
/// on `GET /entries` formatting dates was the guest's largest cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

impl Date {
    /// Parses exactly `YYYY-MM-DD`, rejecting dates that do not exist.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a date: expected YYYY-MM-DD");
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(bad());
        }
        let number = |range: std::ops::Range<usize>| -> Result<u16, String> {
            let digits = &text[range];
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            digits.parse().map_err(|_| bad())
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if year == 0 || !(1..=12).contains(&month) {
            return Err(bad());
        }
        let month = month as u8;
        if day == 0 || day > u16::from(days_in_month(year, month)) {
            return Err(format!("`{text}` is not a date: that day does not exist"));
        }
        Ok(Self {
            year,
            month,
            day: day as u8,
        })
    }

    /// The date as the number `YYYYMMDD`.
    fn to_number(self) -> u32 {
        u32::from(self.year) * 10_000 + u32::from(self.month) * 100 + u32::from(self.day)
    }

    /// The date a `YYYYMMDD` number names, if it exists.
    fn from_number(number: u32) -> Option<Self> {
        let year = u16::try_from(number / 10_000).ok()?;
        // Both are below 100 after the remainder.
        let month = (number / 100 % 100) as u8;
        let day = (number % 100) as u8;
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day);
        valid.then_some(Self { year, month, day })
    }

    /// Appends `YYYY-MM-DD` to `out`, without a formatter.
    pub fn push_onto(self, out: &mut String) {
        out.extend(self.to_text().map(char::from));
    }

    /// `YYYY-MM-DD`, written digit by digit.
    fn to_text(self) -> [u8; 10] {
        let digit = |value: u16, place: u16| b'0' + (value / place % 10) as u8;
        let (year, month, day) = (self.year, u16::from(self.month), u16::from(self.day));
        [
            digit(year, 1000),
            digit(year, 100),
            digit(year, 10),
            digit(year, 1),
            b'-',
            digit(month, 10),
            digit(month, 1),
            b'-',
            digit(day, 10),
            digit(day, 1),
        ]
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_text();
        // Digits and dashes only: always UTF-8.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u32(self.to_number())
        }
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            Date::parse(&text).map_err(D::Error::custom)
        } else {
            let number = u32::deserialize(deserializer)?;
            Date::from_number(number)
                .ok_or_else(|| D::Error::custom(format!("{number} is not a YYYYMMDD date")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_iso_dates() {
        let date = Date::parse("2023-01-01").expect("valid");
        assert_eq!(date.to_string(), "2023-01-01");
        assert_eq!(
            Date::parse("2024-02-29").expect("leap day").to_string(),
            "2024-02-29"
        );
    }

    #[test]
    fn rejects_what_is_not_a_date() {
        for text in [
            "",
            "2023-1-01",
            "2023-01-1",
            "2023/01/01",
            "20230101",
            "2023-13-01",
            "2023-00-10",
            "2023-01-32",
            "2023-02-29",
            "1900-02-29",
            "0000-01-01",
            "2023-01-01 ",
            "+023-01-01",
            "２０２３-01-01",
        ] {
            assert!(Date::parse(text).is_err(), "{text:?} should be rejected");
        }
        assert!(Date::parse("2000-02-29").is_ok());
    }

    #[test]
    fn json_holds_the_text_and_postcard_the_number() {
        let date = Date::parse("0999-02-28").expect("valid");
        assert_eq!(
            serde_json::to_string(&date).expect("json"),
            r#""0999-02-28""#
        );
        assert_eq!(
            serde_json::from_str::<Date>(r#""0999-02-28""#).ok(),
            Some(date)
        );
        assert!(serde_json::from_str::<Date>(r#""2023-02-29""#).is_err());
        let compact = postcard::to_allocvec(&date).expect("postcard");
        assert_eq!(postcard::from_bytes::<Date>(&compact).ok(), Some(date));
        assert_eq!(postcard::from_bytes::<u32>(&compact).ok(), Some(9_990_228));
        for impossible in [20230229_u32, 20231301, 20230100, 101, 100_000_101] {
            let bytes = postcard::to_allocvec(&impossible).expect("postcard");
            assert!(
                postcard::from_bytes::<Date>(&bytes).is_err(),
                "{impossible} is no date"
            );
        }
    }

    #[test]
    fn orders_chronologically() {
        let a = Date::parse("2023-01-31").expect("valid");
        let b = Date::parse("2023-02-01").expect("valid");
        assert!(a < b);
    }
}
