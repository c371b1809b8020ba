//! AVC decoder configuration records, AAC AudioSpecificConfig, ADTS headers, and the NAL unit
//! framing of publishers' frames (AVCC and Annex-B), as every ingest meets them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamgate_media::{nal, parse_adts, AacConfig, AvcConfig};

fuzz_target!(|data: &[u8]| {
    let _ = AvcConfig::parse(data);
    let _ = AacConfig::parse(data);
    let _ = parse_adts(data);
    let _ = nal::split_annexb(data);
    let _ = nal::avcc_to_annexb(data);
    let _ = nal::annexb_to_avcc(data);
    if let Ok(units) = nal::split_annexb(data) {
        let sps: Vec<Bytes> = units.iter().map(|u| Bytes::copy_from_slice(u)).collect();
        let _ = AvcConfig::from_parameter_sets(sps.clone(), sps);
    }
    for len in 1..=4 {
        let _ = nal::split_avcc(data, len);
        let _ = nal::normalize_avcc(Bytes::copy_from_slice(data), len);
    }
});
