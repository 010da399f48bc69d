//! Generated names: Kubernetes' `generateName` suffix alphabet (no vowels, no
//! look-alike digits), used for `c-xxxxx` clusters, `p-xxxxx` projects and
//! `token-xxxxx` tokens.

use rand::Rng;

const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random suffix of `len` characters from Kubernetes' alphabet.
pub fn random_suffix(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `prefix` followed by a five-character random suffix.
pub fn generate(prefix: &str) -> String {
    format!("{prefix}{}", random_suffix(5))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_names_use_the_alphabet() {
        let name = super::generate("c-");
        assert_eq!(name.len(), 7);
        assert!(name[2..].bytes().all(|b| super::ALPHABET.contains(&b)));
    }
}
