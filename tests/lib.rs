//! Shared harness of the end-to-end tests.

/// Checks firmware in Intel HEX: every record well-formed, checksums right, an EOF record at
/// the end (panics otherwise, naming the record); returns the data bytes.
pub fn check_intel_hex(text: &str) -> Vec<u8> {
    let mut data = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        let hex = line.strip_prefix(':').expect("record starts with ':'");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(bytes.len(), 5 + bytes[0] as usize, "record length: {line}");
        let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        assert_eq!(sum, 0, "checksum of {line}");
        match bytes[3] {
            0 => data.extend_from_slice(&bytes[4..bytes.len() - 1]),
            1 => eof = true,
            _ => {}
        }
    }
    assert!(eof, "no EOF record");
    data
}
