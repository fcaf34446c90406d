//! "Did you mean" suggestions for misspelt keys and values.

/// Edit distance with adjacent transpositions counted as one edit
/// (optimal string alignment), case-insensitive: `memroy` is one edit from
/// `memory`, `Memory` none.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely
/// typo: one edit for short words, two up to eight characters, three
/// beyond. Ties go to the earlier candidate.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Overlong words cannot be typos of our short names; skip the quadratic
    // work on hostile input.
    if word.chars().count() > 64 {
        return None;
    }
    let limit = match word.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// " (did you mean 'x'?)" or nothing.
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!(" (did you mean '{c}'?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("memroy", "memory"), 1);
        assert_eq!(distance("Memory", "memory"), 0);
        assert_eq!(distance("vcpu", "vcpus"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let keys = ["memory", "maxmem", "vcpus", "on_reboot", "root"];
        assert_eq!(closest("memroy", &keys), Some("memory"));
        assert_eq!(closest("on-reboot", &keys), Some("on_reboot"));
        assert_eq!(closest("vcpu", &keys), Some("vcpus"));
        assert_eq!(closest("rot", &keys), Some("root"));
        assert_eq!(closest("bootloader", &keys), None);
        assert_eq!(did_you_mean("xyz", &keys), "");
    }
}
