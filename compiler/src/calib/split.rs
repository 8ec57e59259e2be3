//! Which split a sample belongs to (SHA-256 of its group key) and where its views crop.

use regex::Regex;
use sha2::{Digest, Sha256};

use super::{CalibError, Split};

/// The group key of a sample name: what `group_by` captures (first capture group, else the
/// whole match), or the name itself.
pub(super) fn group_key(name: &str, group_by: Option<&Regex>) -> Result<String, CalibError> {
    let Some(re) = group_by else { return Ok(name.to_owned()) };
    let caps = re
        .captures(name)
        .ok_or_else(|| CalibError::GroupByNoMatch { name: name.to_owned(), regex: re.as_str().to_owned() })?;
    let m = caps.get(1).or_else(|| caps.get(0)).expect("a successful match has group 0");
    Ok(m.as_str().to_owned())
}

/// The split of a group: the first 8 bytes of SHA-256(key), big-endian, as a fraction in [0, 1),
/// compared with the cumulative split fractions.
pub(super) fn split_of(key: &str, fractions: [f64; 3]) -> Split {
    let u = unit_hash(&[key.as_bytes()]);
    if u < fractions[0] {
        Split::Fit
    } else if u < fractions[0] + fractions[1] {
        Split::Validation
    } else {
        Split::Test
    }
}

/// The crop's top-left corner and horizontal flip of view `view` of the image `name`, in a
/// canvas of `canvas` = (h, w) cropped to `crop` = (h, w). View 0 is the center crop, unflipped;
/// odd views flip; views ≥ 1 with room to move take offsets from SHA-256(name, view).
pub(super) fn view_placement(name: &str, view: usize, canvas: (u32, u32), crop: (u32, u32)) -> ((u32, u32), bool) {
    let center = ((canvas.0 - crop.0) / 2, (canvas.1 - crop.1) / 2);
    if view == 0 {
        return (center, false);
    }
    let view_text = view.to_string();
    let y = unit_hash(&[name.as_bytes(), b"\0y\0", view_text.as_bytes()]);
    let x = unit_hash(&[name.as_bytes(), b"\0x\0", view_text.as_bytes()]);
    let pick = |u: f64, room: u32| ((u * f64::from(room + 1)) as u32).min(room);
    ((pick(y, canvas.0 - crop.0), pick(x, canvas.1 - crop.1)), view % 2 == 1)
}

/// SHA-256 of the concatenated parts, its first 8 bytes as a fraction in [0, 1).
fn unit_hash(parts: &[&[u8]]) -> f64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let first = u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"));
    // 2^-64 scaling maps u64 onto [0, 1); f64 rounding can reach 1.0 only for the top 2^10 values.
    (first as f64 * (1.0 / 18_446_744_073_709_551_616.0)).min(1.0 - f64::EPSILON)
}
