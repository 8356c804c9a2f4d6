//! Records kept compressed one by one, so a simulated account of a million parties fits in a
//! few hundred MiB.
//!
//! Each record is its JSON text compressed with zstd and a dictionary trained on the
//! generator's own records. A record alone is too small for ordinary compression (1.6–2× with
//! zlib); against a dictionary that already holds the field names and the repeated values it
//! shrinks 6–8×. Records stay independently readable, so a page decompresses only its own
//! records, and a change repacks one record.
//!
//! The dictionary is trained once per process, on first use, from a small account generated
//! with plain (uncompressed) records: it follows the generator whenever the generator changes,
//! and nothing binary is checked in.

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// The first byte of a packed record says how the rest is kept.
const PLAIN: u8 = 0;
const COMPRESSED: u8 = 1;

/// Dictionary size: 32 KiB holds the field names and the frequent values of every collection;
/// 64 and 110 KiB gained 2 % on the generated records.
const DICTIONARY_BYTES: usize = 32 * 1024;

/// zstd's default level. Measured on 100k parties: level 7 packs 8 % smaller and generates
/// 70 % slower; the dictionary does most of the work on ~1 KB records.
const LEVEL: i32 = 3;

/// Largest record text accepted back (generated records are a few KB).
const MAX_RECORD_BYTES: usize = 16 << 20;

/// Parties in the account the dictionary is trained on (with its opportunities, cases, tasks,
/// tracks and entries: ~800 records). 600 packed records 1 % smaller and cost every test that
/// starts a simulator twice the training time.
const SAMPLE_PARTIES: usize = 250;

/// A dictionary prepared for both directions.
pub struct Dictionary {
    encoder: EncoderDictionary<'static>,
    decoder: DecoderDictionary<'static>,
}

/// How new records are kept: plain while the dictionary's own sample is generated, compressed
/// otherwise.
#[derive(Clone, Copy)]
pub enum Packing {
    Plain,
    Compressed(&'static Dictionary),
}

static DICTIONARY: OnceLock<Dictionary> = OnceLock::new();

thread_local! {
    static COMPRESSOR: RefCell<(Option<Compressor<'static>>, Vec<u8>)> = const { RefCell::new((None, Vec::new())) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

impl Packing {
    /// Compressed with the process's dictionary.
    pub fn compressed() -> Packing {
        Packing::Compressed(dictionary())
    }

    /// `json` kept this way.
    pub fn pack(self, json: &[u8]) -> Box<[u8]> {
        match self {
            Packing::Plain => [&[PLAIN], json].concat().into_boxed_slice(),
            Packing::Compressed(dictionary) => COMPRESSOR.with_borrow_mut(|(compressor, scratch)| {
                let compressor = compressor.get_or_insert_with(|| dictionary.compressor());
                scratch.clear();
                scratch.reserve(zstd::zstd_safe::compress_bound(json.len()) + 1);
                scratch.push(COMPRESSED);
                let mut out = std::io::Cursor::new(&mut *scratch);
                out.set_position(1);
                compressor.compress_to_buffer(json, &mut out).expect("compressing a record in memory");
                // Copied out at its exact size: an allocation shrunk in place would keep its
                // bigger size class, and a million of them cost more than the records.
                Box::from(&scratch[..])
            }),
        }
    }

    /// The packing `packed` was made with (what a changed record is packed with again).
    pub fn of(packed: &[u8]) -> Packing {
        match packed.first() {
            Some(&COMPRESSED) => Packing::compressed(),
            _ => Packing::Plain,
        }
    }
}

/// The JSON text of a packed record.
pub fn unpack(packed: &[u8]) -> Vec<u8> {
    match packed.split_first() {
        Some((&COMPRESSED, compressed)) => DECOMPRESSOR.with_borrow_mut(|decompressor| {
            let decompressor = decompressor.get_or_insert_with(|| dictionary().decompressor());
            decompressor.decompress(compressed, MAX_RECORD_BYTES).expect("a packed record decompresses")
        }),
        Some((_, plain)) => plain.to_vec(),
        None => Vec::new(),
    }
}

/// The process's dictionary, trained now if this is its first use.
fn dictionary() -> &'static Dictionary {
    DICTIONARY.get_or_init(|| Dictionary::train(&super::generate::sample_texts(SAMPLE_PARTIES)))
}

impl Dictionary {
    fn train(samples: &[Vec<u8>]) -> Dictionary {
        let bytes = zstd::dict::from_samples(samples, DICTIONARY_BYTES)
            .expect("training a dictionary on the generator's sample records");
        Dictionary { encoder: EncoderDictionary::copy(&bytes, LEVEL), decoder: DecoderDictionary::copy(&bytes) }
    }

    fn compressor(&'static self) -> Compressor<'static> {
        let mut compressor = Compressor::with_prepared_dictionary(&self.encoder).expect("a zstd compression context");
        // The dictionary is implied (there is one per process): its id would cost 4 bytes a record.
        compressor.include_dictid(false).expect("a zstd frame parameter");
        compressor.include_checksum(false).expect("a zstd frame parameter");
        compressor
    }

    fn decompressor(&'static self) -> Decompressor<'static> {
        Decompressor::with_prepared_dictionary(&self.decoder).expect("a zstd decompression context")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_packings_give_back_the_text() {
        let text = br#"{"id":1,"type":"person","firstName":"Ada","lastName":"Lovelace","tags":[]}"#;
        for packing in [Packing::Plain, Packing::compressed()] {
            let packed = packing.pack(text);
            assert_eq!(unpack(&packed), text);
            assert_eq!(matches!(Packing::of(&packed), Packing::Plain), matches!(packing, Packing::Plain));
        }
    }

    #[test]
    fn generated_records_compress_several_times() {
        // Another seed than the training sample's, so the figure is not the dictionary recalling its own input.
        let samples = super::super::generate::sample_texts_seeded(7, 200);
        let raw: usize = samples.iter().map(Vec::len).sum();
        let packed: usize = samples.iter().map(|s| Packing::compressed().pack(s).len()).sum();
        assert!(raw >= 4 * packed, "{raw} bytes of records packed into {packed}: under 4×");
    }
}
