"""DICOM objects the appliance writes (Ophthalmic Photography now; SR, PDF and SC later)."""
