//! The tail line splitter (`sidecars::tail::lines`): any bytes, in any format (`raw`, `json`,
//! `cri`), with or without multiline joining and the raw fast path, cut into reads at any
//! points. Never a panic; the lines shipped do not depend on where the reads were cut; and once
//! the file is finished every byte is committed (nothing lost, nothing pending).
//!
//! Input: byte 0 picks the options, byte 1 the `--max-line-bytes`, byte 2 the number of cuts,
//! then one byte per cut (its position, as a fraction of the rest), then the file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecars::tail::fuzz::{Options, split};

fuzz_target!(|data: &[u8]| {
    let [flags, max, cuts, rest @ ..] = data else {
        return;
    };
    let cuts = usize::from(*cuts % 16).min(rest.len());
    let (cut_bytes, file) = rest.split_at(cuts);
    let format = match flags & 3 {
        1 => "json",
        2 => "cri",
        _ => "raw",
    };
    let options = Options {
        format,
        multiline: (flags & 4 != 0).then_some(r"^\d"),
        // Small limits cut lines often; 4 is the reader's own floor.
        max_line_bytes: if flags & 16 != 0 {
            4 + usize::from(*max)
        } else {
            4 + usize::from(*max % 32)
        },
        raw_output: flags & 8 != 0,
    };

    let (whole, committed) = split(&options, &[file]);
    assert_eq!(committed, file.len() as u64, "bytes left uncommitted");

    let mut points: Vec<usize> = cut_bytes
        .iter()
        .map(|b| usize::from(*b) * file.len() / 255)
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for p in points {
        chunks.push(&file[at..p]);
        at = p;
    }
    chunks.push(&file[at..]);
    let (cut, committed) = split(&options, &chunks);
    assert_eq!(committed, file.len() as u64, "bytes left uncommitted (cut)");
    assert_eq!(whole, cut, "the lines depend on where the reads were cut");

    if file.len() <= 256 {
        let bytes: Vec<&[u8]> = file.chunks(1).collect();
        let (single, _) = split(&options, &bytes);
        assert_eq!(whole, single, "byte-by-byte reads differ");
    }

    // Spans follow each other without gaps or overlaps, from byte 0 to the end.
    let mut next = 0;
    for line in &whole {
        if let Some((start, end)) = line.span {
            assert!(start <= end, "{line:?}");
            if options.multiline.is_none() && format != "cri" {
                assert_eq!(start, next, "gap or overlap at {line:?}");
            }
            next = end;
        }
    }
});
