//! Producing the blob's bytes as they must look at a given load address.

use super::{Package, PieError, PAGE_SIZE};

/// Fills `dst` with the blob as loaded at `base`: copies the image, zeroes
/// the rest up to `pkg.mem_size()` (bss), and adds `base` to every
/// relocation slot. `dst` must hold at least `pkg.mem_size()` bytes (bytes
/// past that are left alone) and `base` must be page aligned.
pub fn relocate_into(pkg: &Package, dst: &mut [u8], base: usize) -> Result<(), PieError> {
    let need = pkg.mem_size();
    if !(base as u64).is_multiple_of(PAGE_SIZE) {
        return Err(PieError::Misaligned(base));
    }
    if (base as u64).checked_add(need).is_none() {
        return Err(PieError::AddressOverflow { base, len: need });
    }
    let have = dst.len();
    let mem = usize::try_from(need)
        .ok()
        .and_then(|n| dst.get_mut(..n))
        .ok_or(PieError::BufferTooSmall { have, need })?;
    let image = pkg.image();
    let (head, bss) = mem.split_at_mut(image.len());
    head.copy_from_slice(image);
    bss.fill(0);
    for &off in pkg.relocs() {
        // Package validation guarantees every slot lies inside the image.
        let slot = usize::try_from(off)
            .ok()
            .and_then(|o| head.get_mut(o..o.checked_add(8)?))
            .ok_or(PieError::Package(linker::PackageError::RelocOutOfRange { offset: off, image: image.len() as u64 }))?;
        let mut word = [0u8; 8];
        word.copy_from_slice(slot);
        let value = u64::from_le_bytes(word).wrapping_add(base as u64);
        slot.copy_from_slice(&value.to_le_bytes());
    }
    Ok(())
}
