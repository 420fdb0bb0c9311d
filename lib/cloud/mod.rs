//! The cloud seam: a small trait in our own verbs, implemented over `outscale_api`.
