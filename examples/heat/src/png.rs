//! A minimal PNG encoder (8-bit RGB, zlib stream of stored deflate blocks), no dependency but
//! crc32fast.
//!
//! ```text
//! file  = 89 50 4E 47 0D 0A 1A 0A, then chunks
//! chunk = length u32 BE | type [4] | data | CRC-32 (type + data) u32 BE
//! IHDR  = width u32 BE | height u32 BE | 8 (depth) | 2 (RGB) | 0 | 0 | 0
//! IDAT  = zlib: 78 01 | stored blocks (final bit | LEN u16 LE | !LEN u16 LE | bytes) | Adler-32 BE
//! ```

/// Maps a value in [0, 1] (clamped) to a blue-white-red colour.
pub fn colour(v: f64) -> [u8; 3] {
    let t = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    if t < 0.5 {
        let s = (t * 2.0 * 255.0) as u8;
        [s, s, 255]
    } else {
        let s = ((1.0 - t) * 2.0 * 255.0) as u8;
        [255, s, s]
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes a `height x width` row-major field (values in [0, 1]) as a PNG.
pub fn encode(width: usize, height: usize, values: &[f64]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(height * (1 + 3 * width));
    for r in 0..height {
        raw.push(0); // filter: none
        for &v in &values[r * width..(r + 1) * width] {
            raw.extend_from_slice(&colour(v));
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}
