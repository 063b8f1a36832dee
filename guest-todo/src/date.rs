//! Calendar dates as the book writes them: `YYYY-MM-DD`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A valid calendar date (proleptic Gregorian, years 0001 to 9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Date::parse(&text)
    }
}

impl From<Date> for String {
    fn from(date: Date) -> String {
        date.to_string()
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
    fn orders_chronologically() {
        let a = Date::parse("2023-01-31").expect("valid");
        let b = Date::parse("2023-02-01").expect("valid");
        assert!(a < b);
    }
}
