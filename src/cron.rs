//! CronJob schedules as Kubernetes reads them: `spec.schedule` parsed and evaluated as
//! github.com/robfig/cron/v3's `ParseStandard` and `SpecSchedule.Next` do, `spec.timeZone`
//! checked as the API server's validation and Go's `time.LoadLocation` do.
//!
//! Written by hand on purpose. Crates such as croner accept extensions (`L`, `W`, `#`, seconds)
//! that the API server refuses, and build on chrono; podkit must refuse what Kubernetes refuses,
//! with robfig's messages, and fire when Kubernetes fires. So this follows robfig's grammar and
//! its search for the next time step by step, including its quirks: `*-5` is `*`, empty list
//! items (`1,,2`) are skipped, `N/step` runs from N to the field's maximum, a step above 1 makes
//! `*` no longer count as `*` for the day-of-month/day-of-week rule, no search goes past five
//! years, and `@every` rounds to whole seconds.
//!
//! Time zone changes (DST) behave as in robfig, which counts hours and minutes on the real clock
//! and rebuilds dates with Go's `time.Date` (emulated by `go_date`):
//! - a wall-clock time that does not exist (spring forward) is skipped: `30 2 * * *` in
//!   America/New_York does not fire on the day clocks go from 2:00 to 3:00, but at 2:30 the next
//!   day; `0 * * * *` fires at 1:00 and then 3:00;
//! - a wall-clock time that happens twice (fall back) fires twice: `30 1 * * *` fires at 1:30
//!   EDT and again at 1:30 EST an hour later (robfig's own tests pin both).

use std::path::Path;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};

/// What the API server says of a schedule that names its own time zone.
const TZ_IN_SCHEDULE: &str = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead";

/// Set in a field's bits when it was written `*` or `?` (robfig's `starBit`): with it, the day of
/// month and the day of week must both match; without it on either, one is enough.
const STAR: u64 = 1 << 63;

/// Where Go's time.LoadLocation looks for a zone's file on Linux, in its order.
const ZONEINFO_DIRS: [&str; 4] = [
    "/usr/share/zoneinfo",
    "/usr/share/lib/zoneinfo",
    "/usr/lib/locale/TZ",
    "/etc/zoneinfo",
];

/// robfig gives up after this many years past the time it starts from.
const YEARS: i32 = 5;

/// Steps of the search before giving up. A five-year search takes a few thousand at most (one a
/// day for a schedule whose days never match); robfig has no bound, and loops forever where a
/// whole day is missing (Pacific/Apia skipped 2011-12-30): here that is None.
const MAX_STEPS: u32 = 100_000;

/// A parsed `spec.schedule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Five fields, or a descriptor (`@daily`, ...) that stands for five fields.
    Fields(Fields),
    /// `@every <duration>`: a fixed delay, in whole seconds (at least one).
    Every { seconds: i64 },
}

/// The values each field accepts, one bit per value, plus [`STAR`]; robfig's `SpecSchedule`
/// without its seconds field, which the five-field grammar always sets to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

/// A field's range and the names it accepts (robfig's `bounds`).
struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

impl Schedule {
    /// Parses a schedule as robfig/cron's ParseStandard does; Err is the message to show
    /// (robfig's wording, e.g. "expected exactly 5 fields, found 6: [...]", "end of range (60)
    /// above maximum (59): 0-60", "unrecognized descriptor: @foo"). A schedule naming a time zone
    /// (`TZ=`, `CRON_TZ=`) is refused as the API server refuses it: any "TZ" in it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        if text.contains("TZ") {
            return Err(TZ_IN_SCHEDULE.to_owned());
        }
        if text.is_empty() {
            return Err("empty spec string".to_owned());
        }
        // Not trimmed first, as robfig: " @daily" is one field of five, "@daily " unknown.
        if text.starts_with('@') {
            return descriptor(text);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        };
        Ok(Schedule {
            kind: Kind::Fields(Fields {
                minute: field(minute, &MINUTES)?,
                hour: field(hour, &HOURS)?,
                dom: field(dom, &DOM)?,
                month: field(month, &MONTHS)?,
                dow: field(dow, &DOW)?,
            }),
        })
    }

    /// The first time strictly after `after` at which it fires, in `tz`; None when none within 5
    /// years (robfig's limit). `@every` fires the delay after `after`, truncated to its second.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // The second `after` falls in (Go's `t.Nanosecond()` is never negative).
        let second = after.as_second() - i64::from(after.subsec_nanosecond() < 0);
        let next = match self.kind {
            Kind::Every { seconds } => second.checked_add(seconds)?,
            Kind::Fields(fields) => fields.next(second.checked_add(1)?, tz)?,
        };
        Timestamp::from_second(next).ok()
    }
}

/// `spec.timeZone` as the API server checks it, and the zone to evaluate the schedule in. None
/// is the host's zone: Kubernetes uses the controller manager's local zone when it is unset.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    let Some(name) = name else {
        return Ok(TimeZone::system());
    };
    if name.is_empty() {
        return Err("timeZone must be nil or non-empty string".to_owned());
    }
    let unknown = || format!("unknown time zone {name}");
    // The validation's own rule on names (tzdb's naming rules, digits and '+' tolerated).
    let valid_part = |part: &str| {
        (1..=14).contains(&part.len())
            && !part.starts_with('-')
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
    };
    if !name.split('/').all(valid_part) {
        return Err(unknown());
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .to_owned(),
        );
    }
    // Go's time.LoadLocation: "UTC" built in, ".." refused, otherwise the TZif file of that
    // name (case-sensitive; posix/ and right/ too) in the first of its directories that has one.
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    if name.contains("..") {
        return Err("time: invalid location name".to_owned());
    }
    ZONEINFO_DIRS
        .iter()
        .find_map(|dir| {
            let data = std::fs::read(Path::new(dir).join(name)).ok()?;
            TimeZone::tzif(name, &data).ok()
        })
        .ok_or_else(unknown)
}

/// A field: a comma-separated list of ranges (robfig's `getField`; empty items are skipped).
fn field(text: &str, bounds: &Bounds) -> Result<u64, String> {
    text.split(',')
        .filter(|expr| !expr.is_empty())
        .try_fold(0, |bits, expr| Ok(bits | range(expr, bounds)?))
}

/// One range: `*` or `?`, `N` or `N-M`, each with an optional `/step` (robfig's `getRange`,
/// checks in its order).
fn range(expr: &str, bounds: &Bounds) -> Result<u64, String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (start, mut end, mut extra);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        // Whatever follows a hyphen is ignored here, as robfig does.
        (start, end, extra) = (bounds.min, bounds.max, STAR);
    } else {
        start = int_or_name(low_and_high[0], bounds)?;
        end = match low_and_high[..] {
            [_] => start,
            [_, high] => int_or_name(high, bounds)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        extra = 0;
    }
    let step = match range_and_step[..] {
        [_] => 1,
        [_, step] => {
            let step = int(step)?;
            if low_and_high.len() == 1 {
                end = bounds.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < bounds.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            bounds.min
        ));
    }
    if end > bounds.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            bounds.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(values(start, end, step) | extra)
}

/// The bits of `start..=end` by `step` (robfig's `getBits`; `end` is at most 59).
fn values(start: u64, end: u64, step: u64) -> u64 {
    let mut bits = 0;
    let mut value = start;
    while value <= end {
        bits |= 1 << value;
        value = value.saturating_add(step);
    }
    bits
}

/// A number or, in the month and day-of-week fields, a name in any case (robfig's
/// `parseIntOrName`).
fn int_or_name(expr: &str, bounds: &Bounds) -> Result<u64, String> {
    // Go's strings.ToLower maps by code point; besides ASCII, only 'İ' and the Kelvin sign
    // lower-case to letters of the names.
    let go_lower = |c: char| match c {
        '\u{130}' => 'i',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    match bounds
        .names
        .iter()
        .find(|(name, _)| expr.chars().map(go_lower).eq(name.chars()))
    {
        Some(&(_, value)) => Ok(value),
        None => int(expr),
    }
}

/// A non-negative number as Go's strconv.Atoi reads it (robfig's `mustParseInt`).
fn int(expr: &str) -> Result<u64, String> {
    let number = atoi(expr).map_err(|err| format!("failed to parse int from {expr}: {err}"))?;
    u64::try_from(number).map_err(|_| format!("negative number ({number}) not allowed: {expr}"))
}

/// Go's strconv.Atoi on a 64-bit machine: an optional sign and decimal digits, and its errors.
fn atoi(text: &str) -> Result<i64, String> {
    let error = |what: &str| format!("strconv.Atoi: parsing {}: {what}", strconv_quote(text));
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(error("invalid syntax"));
    }
    // Digit by digit, so that an overflow before a bad character reports the overflow, as Go.
    let mut magnitude: u64 = 0;
    for c in digits.bytes() {
        if !c.is_ascii_digit() {
            return Err(error("invalid syntax"));
        }
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(c - b'0')))
            .ok_or_else(|| error("value out of range"))?;
    }
    let number = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    number.ok_or_else(|| error("value out of range"))
}

/// Go's strconv.Quote, as far as a field can need it: escapes for quotes, backslashes and
/// control characters. (Go also escapes the other non-printable code points, format characters
/// and the like; those are kept here.)
fn strconv_quote(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if c.is_ascii_control() => quoted.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `@yearly` and the like, and `@every <duration>` (robfig's `parseDescriptor`).
fn descriptor(text: &str) -> Result<Schedule, String> {
    // A field's minimum alone, or all of it as `*`.
    let first = |bounds: &Bounds| 1 << bounds.min;
    let all = |bounds: &Bounds| values(bounds.min, bounds.max, 1) | STAR;
    let (minute, hour) = (first(&MINUTES), first(&HOURS));
    let fields = match text {
        "@yearly" | "@annually" => Some((minute, hour, first(&DOM), first(&MONTHS), all(&DOW))),
        "@monthly" => Some((minute, hour, first(&DOM), all(&MONTHS), all(&DOW))),
        "@weekly" => Some((minute, hour, all(&DOM), all(&MONTHS), first(&DOW))),
        "@daily" | "@midnight" => Some((minute, hour, all(&DOM), all(&MONTHS), all(&DOW))),
        "@hourly" => Some((minute, all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW))),
        _ => None,
    };
    if let Some((minute, hour, dom, month, dow)) = fields {
        return Ok(Schedule {
            kind: Kind::Fields(Fields {
                minute,
                hour,
                dom,
                month,
                dow,
            }),
        });
    }
    let Some(duration) = text.strip_prefix("@every ") else {
        return Err(format!("unrecognized descriptor: {text}"));
    };
    let nanos =
        go_duration(duration).map_err(|err| format!("failed to parse duration {text}: {err}"))?;
    // robfig's Every: less than a second is a second; fractions of a second are dropped.
    Ok(Schedule {
        kind: Kind::Every {
            seconds: nanos.max(NANOS_PER_SECOND) / NANOS_PER_SECOND,
        },
    })
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Go's time.ParseDuration, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, units ns, us
/// (µs, μs), ms, s, m, h, with its overflow checks and errors.
fn go_duration(text: &str) -> Result<i64, String> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || format!("time: invalid duration {}", time_quote(text));
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part: [0-9]*
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let mut whole: u64 = 0;
        for c in rest[..digits].bytes() {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(c - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        rest = &rest[digits..];
        // The fraction: (\.[0-9]*)? — precision stops growing when it would overflow.
        let (mut fraction, mut scale, mut fraction_digits) = (0u64, 1f64, 0);
        if let Some(after_dot) = rest.strip_prefix('.') {
            rest = after_dot;
            fraction_digits =
                rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let mut overflow = false;
            for c in rest[..fraction_digits].bytes() {
                if overflow || fraction > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(c - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            rest = &rest[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return Err(invalid());
        }
        // The unit: everything up to the next digit or dot.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(format!(
                "time: missing unit in duration {}",
                time_quote(text)
            ));
        }
        let unit_name = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    time_quote(unit_name),
                    time_quote(text)
                ));
            }
        };
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // As Go: in float64, which is exact enough for fractions of an hour.
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        // Wrapping as Go's uint64 does (2^63 + 2^63 is 0 there).
        total = total.wrapping_add(value);
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        return Ok(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// The time package's own quoting in its errors: bytes of non-ASCII and control characters as
/// `\xNN`.
fn time_quote(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        if !c.is_ascii() || c < ' ' {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                quoted.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
    }
    quoted.push('"');
    quoted
}

impl Fields {
    /// robfig's `SpecSchedule.Next` from `t` (Unix seconds, already the second after the time
    /// asked about), step for step: month, day, hour, minute and second are checked in turn; a
    /// field that does not match is advanced (the first time, after resetting the smaller
    /// fields), and when a larger field rolls over the search starts again from the month.
    /// Hours and minutes are advanced on the real clock, dates through [`go_date`].
    fn next(&self, mut t: i64, tz: &TimeZone) -> Option<i64> {
        let civil = |t: i64| Some(tz.to_datetime(Timestamp::from_second(t).ok()?));
        let mut added = false;
        let year_limit = i32::from(civil(t)?.year()) + YEARS;
        let mut steps = MAX_STEPS;
        'wrap: loop {
            steps = steps.checked_sub(1)?;
            if i32::from(civil(t)?.year()) > year_limit {
                return None;
            }
            while !has(self.month, civil(t)?.month()) {
                steps = steps.checked_sub(1)?;
                if !added {
                    added = true;
                    let [year, month, ..] = wall(civil(t)?);
                    t = go_date(tz, [year, month, 1, 0, 0, 0])?;
                }
                t = add_date(tz, civil(t)?, 1, 0)?;
                if civil(t)?.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(civil(t)?) {
                steps = steps.checked_sub(1)?;
                if !added {
                    added = true;
                    let [year, month, day, ..] = wall(civil(t)?);
                    t = go_date(tz, [year, month, day, 0, 0, 0])?;
                }
                t = add_date(tz, civil(t)?, 0, 1)?;
                // Where midnight does not exist, time.Date lands an hour before or after it:
                // robfig moves to the day's first hour.
                let hour = i64::from(civil(t)?.hour());
                if hour > 12 {
                    t += (24 - hour) * 3600;
                } else {
                    t -= hour * 3600;
                }
                if civil(t)?.day() == 1 {
                    continue 'wrap;
                }
            }
            while !has(self.hour, civil(t)?.hour()) {
                steps = steps.checked_sub(1)?;
                if !added {
                    added = true;
                    let [year, month, day, hour, ..] = wall(civil(t)?);
                    t = go_date(tz, [year, month, day, hour, 0, 0])?;
                }
                t += 3600;
                if civil(t)?.hour() == 0 {
                    continue 'wrap;
                }
            }
            while !has(self.minute, civil(t)?.minute()) {
                steps = steps.checked_sub(1)?;
                if !added {
                    added = true;
                    t = t.div_euclid(60) * 60;
                }
                t += 60;
                if civil(t)?.minute() == 0 {
                    continue 'wrap;
                }
            }
            // The seconds field is 0: on to the next whole minute, and check it all again.
            while civil(t)?.second() != 0 {
                steps = steps.checked_sub(1)?;
                added = true;
                t += 1;
                if civil(t)?.second() == 0 {
                    continue 'wrap;
                }
            }
            return Some(t);
        }
    }

    /// robfig's `dayMatches`: with `*` in either day field both must match (so `0 0 * * 5` is
    /// Fridays only); with neither, either may (Vixie cron: `0 0 13 * 5` is the 13th and every
    /// Friday).
    fn day_matches(&self, date: DateTime) -> bool {
        let dom = has(self.dom, date.day());
        let dow = has(self.dow, date.weekday().to_sunday_zero_offset());
        if (self.dom | self.dow) & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }
}

/// Whether `value` (a minute, hour, day, month or weekday: never negative) is among `bits`.
fn has(bits: u64, value: i8) -> bool {
    (bits >> value) & 1 == 1
}

/// A wall-clock reading as Go's `time.Date` takes it: year, month, day, hour, minute, second.
fn wall(now: DateTime) -> [i64; 6] {
    [
        now.year().into(),
        now.month().into(),
        now.day().into(),
        now.hour().into(),
        now.minute().into(),
        now.second().into(),
    ]
}

/// Go's `t.AddDate(0, months, days)` for a time `t` whose wall clock reads `now`.
fn add_date(tz: &TimeZone, now: DateTime, months: i64, days: i64) -> Option<i64> {
    let [year, month, day, hour, minute, second] = wall(now);
    go_date(tz, [year, month + months, day + days, hour, minute, second])
}

/// Go's `time.Date(year, month, day, hour, minute, second, 0, tz)` in Unix seconds: months past
/// December and days past the month's end roll over; a wall-clock time is placed with the
/// offset in effect at that wall-clock reading taken as UTC, corrected once if that offset is
/// not in effect at the result. So in a gap or an overlap the result depends on the offset's
/// sign: 2:30 on a spring-forward day is 1:30 EST in New York but 3:30 CEST in Berlin, 1:30 on a
/// fall-back day the first (EDT) in New York but 2:30 the second (CET) in Berlin. robfig's
/// search relies on this (its correction of days whose midnight does not exist).
fn go_date(tz: &TimeZone, [year, month, day, hour, minute, second]: [i64; 6]) -> Option<i64> {
    let year = i16::try_from(year + (month - 1).div_euclid(12)).ok()?;
    let month = i8::try_from((month - 1).rem_euclid(12) + 1).ok()?;
    let first = Offset::UTC
        .to_timestamp(Date::new(year, month, 1).ok()?.at(0, 0, 0, 0))
        .ok()?
        .as_second();
    let as_utc = first + (day - 1) * 86_400 + hour * 3600 + minute * 60 + second;
    let offset = |t: i64| {
        Some(i64::from(
            tz.to_offset(Timestamp::from_second(t).ok()?).seconds(),
        ))
    };
    let guess = offset(as_utc)?;
    Some(as_utc - offset(as_utc - guess)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).expect("time zone in the system's tzdb")
    }

    fn err(schedule: &str) -> String {
        Schedule::parse(schedule).expect_err("refused")
    }

    /// The next `count` times after `after`, each from the one before.
    fn next(schedule: &str, tz: &str, after: &str, count: usize) -> Vec<String> {
        let schedule = Schedule::parse(schedule).expect("schedule");
        let tz = zone(tz);
        let mut times = Vec::new();
        let mut t = at(after);
        for _ in 0..count {
            t = schedule.next_after(t, &tz).expect("a next time");
            times.push(t.to_zoned(tz.clone()).strftime("%F %T %:z").to_string());
        }
        times
    }

    #[test]
    fn parses_fields_names_steps_and_stars() {
        let fields = |text: &str| match Schedule::parse(text).expect("schedule").kind {
            Kind::Fields(fields) => fields,
            Kind::Every { .. } => panic!("fields"),
        };
        let f = fields("*/15 9-17 1,15 JAN-mar mon-FRI");
        assert_eq!(f.minute, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(f.hour, 0b11_1111_1110_0000_0000);
        assert_eq!(f.dom, 1 << 1 | 1 << 15);
        assert_eq!(f.month, 0b1110);
        assert_eq!(f.dow, 0b11_1110);
        // `*` and `?` are the whole range and marked; a step above 1 drops the mark, 1 keeps it.
        assert_eq!(fields("* * ? * *").dom, values(1, 31, 1) | STAR);
        assert_eq!(fields("0 0 */1 * *").dom, values(1, 31, 1) | STAR);
        assert_eq!(fields("0 0 */2 * *").dom, values(1, 31, 2));
        // `N/step` runs to the maximum; what follows `*-` is ignored; empty items are skipped.
        assert_eq!(fields("50/4 * * * *").minute, 1 << 50 | 1 << 54 | 1 << 58);
        assert_eq!(fields("*-5 * * * *").minute, values(0, 59, 1) | STAR);
        assert_eq!(fields("1,,2 * * * *").minute, 0b110);
        assert_eq!(fields("+5 * * * 0").minute, 1 << 5);
        // Names lower-cased as Go does, by code point: 'İ' is 'i'.
        assert_eq!(fields("0 0 * * FR\u{130}"), fields("0 0 * * 5"));
        // Any whitespace separates fields.
        assert_eq!(fields(" 0\t0  1 1 *\n"), fields("@yearly"));
    }

    #[test]
    fn parses_descriptors() {
        assert_eq!(Schedule::parse("@yearly"), Schedule::parse("0 0 1 1 *"));
        assert_eq!(Schedule::parse("@annually"), Schedule::parse("0 0 1 1 *"));
        assert_eq!(Schedule::parse("@monthly"), Schedule::parse("0 0 1 * *"));
        assert_eq!(Schedule::parse("@weekly"), Schedule::parse("0 0 * * 0"));
        assert_eq!(Schedule::parse("@daily"), Schedule::parse("0 0 * * *"));
        assert_eq!(Schedule::parse("@midnight"), Schedule::parse("0 0 * * *"));
        assert_eq!(Schedule::parse("@hourly"), Schedule::parse("0 * * * *"));
        let every = |text: &str| match Schedule::parse(text).expect("schedule").kind {
            Kind::Every { seconds } => seconds,
            Kind::Fields(_) => panic!("@every"),
        };
        assert_eq!(every("@every 1h30m"), 5400);
        assert_eq!(every("@every 90s"), 90);
        assert_eq!(every("@every 5m"), 300);
        assert_eq!(every("@every 1.5h"), 5400);
        assert_eq!(every("@every .5m"), 30);
        assert_eq!(every("@every 2h45m30.9s"), 9930);
        assert_eq!(every("@every 1500ms"), 1);
        assert_eq!(every("@every 1m1us"), 60);
        assert_eq!(every("@every 2000000\u{b5}s"), 2);
        // Under a second (zero and negative too) is a second.
        assert_eq!(every("@every 100ms"), 1);
        assert_eq!(every("@every 0"), 1);
        assert_eq!(every("@every -5m"), 1);
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        let cases = [
            ("", "empty spec string"),
            (
                "TZ=UTC 0 * * * *",
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ),
            (
                "CRON_TZ=Europe/Paris 0 * * * *",
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ),
            ("0 * * *", "expected exactly 5 fields, found 4: [0 * * *]"),
            (
                "0 0 * * * *",
                "expected exactly 5 fields, found 6: [0 0 * * * *]",
            ),
            ("   ", "expected exactly 5 fields, found 0: []"),
            (" @daily", "expected exactly 5 fields, found 1: [@daily]"),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("0-60 * * * *", "end of range (60) above maximum (59): 0-60"),
            ("0 24 * * *", "end of range (24) above maximum (23): 24"),
            ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("0 0 32 * *", "end of range (32) above maximum (31): 32"),
            ("0 0 * 0 *", "beginning of range (0) below minimum (1): 0"),
            ("0 0 * 13 *", "end of range (13) above maximum (12): 13"),
            ("0 0 * * 7", "end of range (7) above maximum (6): 7"),
            (
                "5-3 * * * *",
                "beginning of range (5) beyond end of range (3): 5-3",
            ),
            (
                "0 0 * DEC-JAN *",
                "beginning of range (12) beyond end of range (1): DEC-JAN",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("1/2/3 * * * *", "too many slashes: 1/2/3"),
            (
                "x * * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            (
                "*/ * * * *",
                "failed to parse int from : strconv.Atoi: parsing \"\": invalid syntax",
            ),
            (
                "-1 * * * *",
                "failed to parse int from : strconv.Atoi: parsing \"\": invalid syntax",
            ),
            ("*/-1 * * * *", "negative number (-1) not allowed: -1"),
            (
                "0 0 * * L",
                "failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax",
            ),
            (
                "0 0 * * 5#3",
                "failed to parse int from 5#3: strconv.Atoi: parsing \"5#3\": invalid syntax",
            ),
            (
                "0 0 * JANUARY *",
                "failed to parse int from JANUARY: strconv.Atoi: parsing \"JANUARY\": invalid syntax",
            ),
            (
                "99999999999999999999 * * * *",
                "failed to parse int from 99999999999999999999: \
                 strconv.Atoi: parsing \"99999999999999999999\": value out of range",
            ),
            ("@foo", "unrecognized descriptor: @foo"),
            ("@Daily", "unrecognized descriptor: @Daily"),
            ("@daily ", "unrecognized descriptor: @daily "),
            ("@every", "unrecognized descriptor: @every"),
            (
                "@every 1x",
                "failed to parse duration @every 1x: time: unknown unit \"x\" in duration \"1x\"",
            ),
            (
                "@every 5",
                "failed to parse duration @every 5: time: missing unit in duration \"5\"",
            ),
            (
                "@every ",
                "failed to parse duration @every : time: invalid duration \"\"",
            ),
            (
                "@every 3000000h",
                "failed to parse duration @every 3000000h: time: invalid duration \"3000000h\"",
            ),
        ];
        for (schedule, message) in cases {
            assert_eq!(err(schedule), message, "{schedule:?}");
        }
    }

    #[test]
    fn every_minute_and_every_quarter_hour() {
        let minute = Schedule::parse("* * * * *").expect("schedule");
        for (after, next) in [
            ("2024-05-17T10:15:00Z", "2024-05-17T10:16:00Z"),
            ("2024-05-17T10:15:30Z", "2024-05-17T10:16:00Z"),
            ("2024-05-17T10:15:59.999Z", "2024-05-17T10:16:00Z"),
            ("2024-12-31T23:59:00Z", "2025-01-01T00:00:00Z"),
        ] {
            assert_eq!(minute.next_after(at(after), &TimeZone::UTC), Some(at(next)));
        }
        assert_eq!(
            next("*/15 * * * *", "UTC", "2024-05-17T10:15:00Z", 4),
            [
                "2024-05-17 10:30:00 +00:00",
                "2024-05-17 10:45:00 +00:00",
                "2024-05-17 11:00:00 +00:00",
                "2024-05-17 11:15:00 +00:00",
            ]
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2024-05-17T23:50:00Z", 1),
            ["2024-05-18 00:00:00 +00:00"]
        );
    }

    #[test]
    fn weekdays_skip_the_weekend() {
        // 2024-05-17 is a Friday.
        assert_eq!(
            next("0 9 * * 1-5", "UTC", "2024-05-17T18:00:00Z", 2),
            ["2024-05-20 09:00:00 +00:00", "2024-05-21 09:00:00 +00:00"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // May 2024: Fridays are the 3rd, 10th, 17th, 24th and 31st; the 13th is a Monday.
        assert_eq!(
            next("0 0 13 * 5", "UTC", "2024-05-01T00:00:00Z", 6),
            [
                "2024-05-03 00:00:00 +00:00",
                "2024-05-10 00:00:00 +00:00",
                "2024-05-13 00:00:00 +00:00",
                "2024-05-17 00:00:00 +00:00",
                "2024-05-24 00:00:00 +00:00",
                "2024-05-31 00:00:00 +00:00",
            ]
        );
        // With `*` (or `?`, or `*/1`) for the day of month, Fridays only.
        for schedule in ["0 0 * * 5", "0 0 ? * FRI", "0 0 */1 * 5"] {
            assert_eq!(
                next(schedule, "UTC", "2024-05-10T00:00:00Z", 2),
                ["2024-05-17 00:00:00 +00:00", "2024-05-24 00:00:00 +00:00"],
                "{schedule}"
            );
        }
        // An explicit 1-31 is not `*`: every day. `*/2` is not either: odd days or Fridays.
        assert_eq!(
            next("0 0 1-31 * 5", "UTC", "2024-05-10T00:00:00Z", 2),
            ["2024-05-11 00:00:00 +00:00", "2024-05-12 00:00:00 +00:00"]
        );
        assert_eq!(
            next("0 0 */2 * 5", "UTC", "2024-05-14T00:00:00Z", 3),
            [
                "2024-05-15 00:00:00 +00:00",
                "2024-05-17 00:00:00 +00:00",
                "2024-05-19 00:00:00 +00:00",
            ]
        );
    }

    #[test]
    fn leap_days_and_the_five_year_limit() {
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2024-03-01T00:00:00Z", 2),
            ["2028-02-29 00:00:00 +00:00", "2032-02-29 00:00:00 +00:00"]
        );
        let leap = Schedule::parse("0 0 29 2 *").expect("schedule");
        // 2100 is no leap year, and 2104 is more than five years after 2096.
        assert_eq!(
            leap.next_after(at("2096-03-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
        let never = Schedule::parse("0 0 30 2 *").expect("schedule");
        assert_eq!(
            never.next_after(at("2024-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn every_adds_the_delay_to_the_whole_second() {
        let every = Schedule::parse("@every 90m").expect("schedule");
        let tz = zone("America/New_York");
        assert_eq!(
            every.next_after(at("2024-05-17T10:15:30.5Z"), &tz),
            Some(at("2024-05-17T11:45:30Z"))
        );
        // Across a DST change too: it is elapsed time.
        assert_eq!(
            every.next_after(at("2024-03-10T06:30:00Z"), &tz),
            Some(at("2024-03-10T08:00:00Z"))
        );
        let second = Schedule::parse("@every 10ms").expect("schedule");
        assert_eq!(
            second.next_after(at("2024-05-17T10:15:30.999Z"), &tz),
            Some(at("2024-05-17T10:15:31Z"))
        );
    }

    #[test]
    fn evaluated_in_the_time_zone() {
        let nine = Schedule::parse("0 9 * * *").expect("schedule");
        let after = at("2024-05-17T12:00:00Z");
        assert_eq!(
            nine.next_after(after, &TimeZone::UTC),
            Some(at("2024-05-18T09:00:00Z"))
        );
        // 12:00 UTC is 08:00 EDT in New York.
        assert_eq!(
            nine.next_after(after, &zone("America/New_York")),
            Some(at("2024-05-17T13:00:00Z"))
        );
        // 12:00 UTC is 17:30 IST in Kolkata; the day is the zone's, not UTC's.
        assert_eq!(
            next("0 0 * * 6", "Asia/Kolkata", "2024-05-17T18:29:59Z", 1),
            ["2024-05-18 00:00:00 +05:30"]
        );
    }

    #[test]
    fn spring_forward_skips_the_missing_time() {
        // 2024-03-10, New York: 2:00 EST is followed by 3:00 EDT; 2:30 that day never happens.
        assert_eq!(
            next(
                "30 2 * * *",
                "America/New_York",
                "2024-03-09T12:00:00-05:00",
                2
            ),
            ["2024-03-11 02:30:00 -04:00", "2024-03-12 02:30:00 -04:00"]
        );
        assert_eq!(
            next(
                "0 * * * *",
                "America/New_York",
                "2024-03-10T00:30:00-05:00",
                3
            ),
            [
                "2024-03-10 01:00:00 -05:00",
                "2024-03-10 03:00:00 -04:00",
                "2024-03-10 04:00:00 -04:00",
            ]
        );
        // robfig's own case: a once-a-year 2:30 on that day waits for the next year.
        assert_eq!(
            next(
                "30 2 11 Mar ?",
                "America/New_York",
                "2012-03-11T00:00:00-05:00",
                1
            ),
            ["2013-03-11 02:30:00 -04:00"]
        );
    }

    #[test]
    fn fall_back_repeats_the_doubled_time() {
        // 2024-11-03, New York: 1:00-1:59 happens in EDT, then again in EST.
        assert_eq!(
            next(
                "30 1 * * *",
                "America/New_York",
                "2024-11-03T00:00:00-04:00",
                3
            ),
            [
                "2024-11-03 01:30:00 -04:00",
                "2024-11-03 01:30:00 -05:00",
                "2024-11-04 01:30:00 -05:00",
            ]
        );
        assert_eq!(
            next(
                "30 2 * * *",
                "America/New_York",
                "2024-11-03T00:00:00-04:00",
                1
            ),
            ["2024-11-03 02:30:00 -05:00"]
        );
    }

    #[test]
    fn days_whose_midnight_does_not_exist() {
        // robfig's cases for Sao Paulo in 2018, when DST began at midnight (00:00 -> 01:00).
        assert_eq!(
            next(
                "0 9 10 * ?",
                "America/Sao_Paulo",
                "2018-10-17T05:00:00-04:00",
                1
            ),
            ["2018-11-10 09:00:00 -02:00"]
        );
        assert_eq!(
            next(
                "0 9 22 * ?",
                "America/Sao_Paulo",
                "2018-02-14T05:00:00-05:00",
                1
            ),
            ["2018-02-22 09:00:00 -03:00"]
        );
        // Midnight on the day itself: the day's first minute is 01:00.
        assert_eq!(
            next(
                "0 0 * * *",
                "America/Sao_Paulo",
                "2018-11-03T12:00:00-03:00",
                2
            ),
            ["2018-11-05 00:00:00 -02:00", "2018-11-06 00:00:00 -02:00"]
        );
    }

    #[test]
    fn a_missing_day_ends_the_search() {
        // Pacific/Apia went from 2011-12-29 to 2011-12-31. robfig never returns from this search
        // (the next Sunday, 2012-01-01); podkit gives up.
        let weekly = Schedule::parse("@weekly").expect("schedule");
        let apia = zone("Pacific/Apia");
        assert_eq!(weekly.next_after(at("2011-12-28T23:31:17Z"), &apia), None);
        // From the day after, as robfig.
        assert_eq!(
            next("@weekly", "Pacific/Apia", "2011-12-31T00:00:00+14:00", 1),
            ["2012-01-01 00:00:00 +14:00"]
        );
    }

    #[test]
    fn go_date_places_gaps_and_overlaps_as_go_does() {
        let place = |tz: &str, wall| go_date(&zone(tz), wall);
        let utc = |text: &str| Some(at(text).as_second());
        // New York (behind UTC): before the gap, the first of the doubled hour.
        assert_eq!(
            place("America/New_York", [2024, 3, 10, 2, 30, 0]),
            utc("2024-03-10T06:30:00Z")
        );
        assert_eq!(
            place("America/New_York", [2024, 11, 3, 1, 30, 0]),
            utc("2024-11-03T05:30:00Z")
        );
        // Berlin (ahead of UTC): after the gap, the second of the doubled hour.
        assert_eq!(
            place("Europe/Berlin", [2024, 3, 31, 2, 30, 0]),
            utc("2024-03-31T01:30:00Z")
        );
        assert_eq!(
            place("Europe/Berlin", [2024, 10, 27, 2, 30, 0]),
            utc("2024-10-27T01:30:00Z")
        );
        // Months and days roll over.
        assert_eq!(
            place("UTC", [2024, 13, 31, 0, 0, 0]),
            utc("2025-01-31T00:00:00Z")
        );
        assert_eq!(
            place("UTC", [2023, 2, 29, 0, 0, 0]),
            utc("2023-03-01T00:00:00Z")
        );
        assert_eq!(
            place("UTC", [2024, 0, 0, 0, 0, 0]),
            utc("2023-11-30T00:00:00Z")
        );
    }

    #[test]
    fn time_zones_as_the_api_server_checks_them() {
        assert!(time_zone(None).is_ok());
        assert_eq!(time_zone(Some("UTC")), Ok(TimeZone::UTC));
        let new_york = time_zone(Some("America/New_York")).expect("zone");
        assert_eq!(new_york.iana_name(), Some("America/New_York"));
        assert!(time_zone(Some("Etc/GMT+5")).is_ok());
        assert!(time_zone(Some("US/Eastern")).is_ok());
        let local =
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones";
        for name in ["Local", "local", "LOCAL"] {
            assert_eq!(
                time_zone(Some(name)).err().as_deref(),
                Some(local),
                "{name}"
            );
        }
        assert_eq!(
            time_zone(Some("")).err().as_deref(),
            Some("timeZone must be nil or non-empty string")
        );
        for name in [
            "Mars/Olympus_Mons",
            // Go's lookup is case-sensitive (jiff's TimeZone::get is not).
            "america/new_york",
            "utc",
            "Etc/Unknown",
            "../etc/passwd",
            "/etc/localtime",
            "America//New_York",
            "-05:00",
            "America/Argentina/Buenos_Aires_X",
            "Europe/Paris ",
            // Not time zones.
            "America",
            "zone.tab",
        ] {
            assert_eq!(
                time_zone(Some(name)).err(),
                Some(format!("unknown time zone {name}")),
                "{name}"
            );
        }
        assert_eq!(
            time_zone(Some("Europe/Pa..ris")).err().as_deref(),
            Some("time: invalid location name")
        );
    }
}
