//! The restorer blob's toolchain: the linker script (`restorer.ld`), the
//! ELF packager and the package format it writes, and the build driver.
