#!/usr/bin/python3
"""Makes the sample DICOM studies of the demo (scripts/demo.sh), all
generated here with numpy + pydicom — nothing is copied from elsewhere:

  chest-xray-clear/      DX, one chest-radiograph-like image (clear lungs)
  chest-xray-opacity/    DX, the same with patchy opacities in both lower lung zones
  ultrasound-breast/     US, one B-mode-like sector image with a dark irregular mass
  fundus/                OP, one colour retinal fundus photograph (Ophthalmic Photography
                         8 Bit: optic disc, vessels, macula, a few haemorrhages and exudates)
  ct-phantom/            CT, a series of 6 axial slices of a simple thorax phantom
  slide/                 SM, a tiled whole-slide pyramid (VL Whole Slide Microscopy,
                         TILED_FULL: two VOLUME levels + a THUMBNAIL), H&E-like colours

usage: samples/make_samples.py OUT_DIR

The pictures are cartoons of the real thing: they exercise the DICOM paths
(12-bit grey, 8-bit ultrasound, 8-bit RGB photograph, CT rescale,
multi-frame tiled RGB) and look
roughly like what the demo model was trained on, but they are not patients.
UIDs are derived from fixed seeds, so a second run makes the same studies.
"""

import os
import sys

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",    # Digital X-Ray Image Storage - For Presentation
    "US": "1.2.840.10008.5.1.4.1.1.6.1",    # Ultrasound Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",      # CT Image Storage
    "OP": "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image Storage
    "SM": "1.2.840.10008.5.1.4.1.1.77.1.6",  # VL Whole Slide Microscopy Image Storage
}


def uid(*parts):
    return generate_uid(entropy_srcs=["unimed-demo-samples"] + [str(p) for p in parts])


def base(name, modality, patient, series_no=1, instance_no=1, sop_key=None):
    """A Part-10 dataset with the patient/study/series modules filled."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CLASS[modality]
    meta.MediaStorageSOPInstanceUID = uid(name, "instance", sop_key if sop_key is not None else instance_no)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CLASS[modality]
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(name, "study")
    ds.SeriesInstanceUID = uid(name, "series", series_no)
    ds.Modality = modality
    ds.PatientID = patient[0]
    ds.PatientName = patient[1]
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240315"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = "DEMO%04d" % (sum(map(ord, name)) % 10000)
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = "UniMed demo: " + name
    ds.SeriesNumber = series_no
    ds.InstanceNumber = instance_no
    ds.Manufacturer = "UniMed for Orthanc sample generator"
    ds.InstitutionName = "Demo (synthetic data)"
    return ds


def grey_module(ds, img, bits_stored):
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = img.shape
    alloc = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = alloc, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = img.astype(np.uint8 if alloc == 8 else np.uint16).tobytes()
    ds["PixelData"].VR = "OB" if alloc == 8 else "OW"


def smooth(a, passes=2):
    for _ in range(passes):
        a = (a + np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1)) / 5.0
    return a


def ellipse(shape, cy, cx, ry, rx):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


# ---- chest X-ray ---------------------------------------------------------------

def chest_xray(opacity, seed):
    n = 512
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] / n
    att = np.full((n, n), 0.15)                                # air around the patient
    body = ellipse((n, n), 0.55 * n, 0.5 * n, 0.55 * n, 0.46 * n)
    att[body] = 0.75                                           # soft tissue
    lungs = ellipse((n, n), 0.50 * n, 0.31 * n, 0.30 * n, 0.15 * n) | \
        ellipse((n, n), 0.50 * n, 0.69 * n, 0.30 * n, 0.15 * n)
    att[lungs] = 0.30                                          # aerated lung is dark
    heart = ellipse((n, n), 0.62 * n, 0.55 * n, 0.14 * n, 0.16 * n)
    att[heart] = np.maximum(att[heart], 0.70)
    att[np.abs(x - 0.5) < 0.045] = 0.85                        # spine / mediastinum
    for k in range(9):                                         # ribs: bright arcs
        yc = 0.26 + 0.055 * k
        rib = np.abs(y - (yc + 0.35 * (x - 0.5) ** 2)) < 0.009
        att[rib & body & (np.abs(x - 0.5) > 0.05)] += 0.18
    att[ellipse((n, n), 0.20 * n, 0.5 * n, 0.02 * n, 0.22 * n)] += 0.15  # clavicles
    if opacity:                                                # patchy opacities, both lower zones
        blotch = smooth((smooth(rng.random((n, n)), 6) > 0.5).astype(float), 4)
        zone = lungs & (y > 0.35)
        att[zone] += 0.4 * (0.5 + blotch[zone])
    att = smooth(att, 3) + rng.normal(0, 0.015, (n, n))
    return np.clip(att * 4095, 0, 4095)


def write_chest(out, name, opacity, seed):
    ds = base(name, "DX", ("DEMO-CXR-%d" % seed, "Demo^Chest^%s" % ("Opacity" if opacity else "Clear")))
    ds.SeriesDescription = "Chest PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [0.7, 0.7]
    ds.PatientOrientation = ["R", "F"]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    grey_module(ds, chest_xray(opacity, seed), 12)
    return save(ds, out, name, "cxr.dcm")


# ---- ultrasound ----------------------------------------------------------------

def ultrasound(seed):
    h, w = 360, 480
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(float)
    apex_y, apex_x = -40.0, w / 2
    r = np.hypot(y - apex_y, x - apex_x)
    ang = np.arctan2(x - apex_x, y - apex_y)
    sector = (np.abs(ang) < 0.62) & (r > 50) & (r < h + 20)
    tissue = 0.55 + 0.15 * np.sin(r / 23.0) * np.cos(ang * 7)          # layered tissue
    tissue[(r > 50) & (r < 90)] = 0.75                                 # bright skin/subcutaneous layer
    mass = ((y - 200) / 55) ** 2 + ((x - 250) / 70) ** 2 <= 1 + 0.25 * np.sin(np.arctan2(y - 200, x - 250) * 5)
    tissue[mass] = 0.12                                                # hypoechoic, irregular
    below = (x > 200) & (x < 300) & (y > 250)
    tissue[below & ~mass] *= 0.7                                       # posterior shadowing
    speckle = rng.rayleigh(0.5, (h, w))
    img = np.clip(smooth(tissue, 1) * speckle * 230, 0, 255) * (1 - np.clip(r / (h * 1.6), 0, 0.5))
    img[~sector] = 0
    img[8:20, 10:140] = 200                                             # a burnt-in label bar
    return img.astype(np.uint8)


def write_us(out, name, seed):
    ds = base(name, "US", ("DEMO-US-%d" % seed, "Demo^Breast^Ultrasound"))
    ds.SeriesDescription = "Breast US left"
    ds.BodyPartExamined = "BREAST"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    grey_module(ds, ultrasound(seed), 8)
    return save(ds, out, name, "us.dcm")


# ---- fundus photograph ---------------------------------------------------------

def fundus(seed, n=512):
    """RGB uint8 fundus photograph of a right eye: the orange-red retina in a
    black circular field, the yellow optic disc on the nasal side, vessels
    arcing out of it, the darker macula, and a few dot haemorrhages and hard
    exudates (the look of moderate diabetic retinopathy)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] / n
    r = np.hypot(y - 0.5, x - 0.5)
    field = r < 0.47
    shade = 1.0 - 0.9 * (r / 0.47) ** 2.5                              # vignetting towards the rim
    rgb = np.zeros((n, n, 3))
    for c, v in enumerate((0.85, 0.38, 0.20)):                         # orange-red choroid
        rgb[..., c] = v * shade
    texture = smooth(rng.random((n, n)), 8) - 0.5
    rgb *= 1 + 0.35 * texture[..., None]
    dy, dx = 0.48, 0.70                                                # optic disc (nasal side)
    d = np.hypot(y - dy, x - dx)
    macula = np.hypot(y - 0.52, x - 0.40)
    rgb *= (1 - 0.35 * np.exp(-(macula / 0.07) ** 2))[..., None]
    vessels = np.zeros((n, n))
    # temporal arcades curving around the macula, shorter nasal branches
    for a0, bend, length in [(1.9, 1.0, 0.45), (-1.9, -1.0, 0.45), (2.5, 0.5, 0.35), (-2.5, -0.5, 0.35),
                             (1.0, 0.3, 0.25), (-1.0, -0.3, 0.25), (0.3, 0.2, 0.2), (-0.3, -0.2, 0.2)]:
        t = np.linspace(0, 1, 400)
        ang = a0 + bend * t
        vy = dy + 0.05 * np.sin(a0) + length * t * np.sin(ang)
        vx = dx + 0.05 * np.cos(a0) + length * t * np.cos(ang)
        width = 0.010 - 0.006 * t
        for py, px, w in zip(vy[::4], vx[::4], width[::4]):
            vessels = np.maximum(vessels, np.exp(-(np.hypot(y - py, x - px) / w) ** 2))
    rgb *= (1 - 0.55 * vessels)[..., None]
    rgb[..., 0] *= 1 - 0.1 * vessels
    disc = np.exp(-(d / 0.055) ** 4)
    for c, v in enumerate((1.0, 0.85, 0.55)):                         # pale yellow disc
        rgb[..., c] = rgb[..., c] * (1 - disc) + v * disc
    for _ in range(14):                                                # dot haemorrhages
        cy, cx = 0.5 + rng.uniform(-0.3, 0.3, 2)
        spot = np.exp(-(np.hypot(y - cy, x - cx) / rng.uniform(0.006, 0.014)) ** 2)
        rgb *= (1 - 0.6 * spot)[..., None]
    for _ in range(10):                                                # hard exudates near the macula
        cy, cx = 0.52 + rng.normal(0, 0.06), 0.40 + rng.normal(0, 0.08)
        spot = np.exp(-(np.hypot(y - cy, x - cx) / rng.uniform(0.004, 0.009)) ** 2)
        for c, v in enumerate((0.95, 0.85, 0.40)):
            rgb[..., c] = rgb[..., c] * (1 - spot) + v * spot
    rgb[~field] = 0
    rgb += rng.normal(0, 0.01, rgb.shape) * field[..., None]
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_fundus(out, name, seed):
    ds = base(name, "OP", ("DEMO-FUNDUS-%d" % seed, "Demo^Fundus^Photograph"))
    ds.SeriesDescription = "Fundus colour, right eye"
    ds.BodyPartExamined = "EYE"
    ds.ImageLaterality = "R"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    img = fundus(seed)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = img.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = img.tobytes()
    ds["PixelData"].VR = "OB"
    return save(ds, out, name, "fundus.dcm")


# ---- CT phantom ----------------------------------------------------------------

def ct_slice(k, n_slices, n=256, seed=0):
    """Hounsfield units of an axial thorax-like phantom slice."""
    rng = np.random.default_rng(seed + k)
    hu = np.full((n, n), -1000.0)
    hu[ellipse((n, n), 0.52 * n, 0.5 * n, 0.34 * n, 0.45 * n)] = 40     # soft tissue
    hu[ellipse((n, n), 0.52 * n, 0.5 * n, 0.31 * n, 0.42 * n) &
       ~ellipse((n, n), 0.52 * n, 0.5 * n, 0.29 * n, 0.40 * n)] = -100  # fat ring
    t = k / max(1, n_slices - 1)
    lung_r = 0.20 + 0.06 * np.sin(np.pi * t)
    for cx in (0.30, 0.70):
        hu[ellipse((n, n), 0.48 * n, cx * n, lung_r * n, 0.14 * n)] = -850   # lungs
    hu[ellipse((n, n), 0.52 * n, 0.52 * n, 0.10 * n, 0.11 * n)] = 45        # heart
    hu[ellipse((n, n), 0.78 * n, 0.5 * n, 0.05 * n, 0.05 * n)] = 700        # vertebra
    hu[ellipse((n, n), 0.40 * n, 0.47 * n, 0.025 * n, 0.025 * n)] = 160     # contrast in the aorta
    if 2 <= k <= 3:
        hu[ellipse((n, n), 0.42 * n, 0.27 * n, 0.025 * n, 0.025 * n)] = 30  # a small nodule
    return hu + rng.normal(0, 12, (n, n))


def write_ct(out, name, n_slices=6):
    paths = []
    for k in range(n_slices):
        ds = base(name, "CT", ("DEMO-CT-1", "Demo^CT^Phantom"), instance_no=k + 1)
        ds.SeriesDescription = "Thorax phantom 5 mm"
        ds.BodyPartExamined = "CHEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = uid(name, "for")
        ds.PixelSpacing = [1.2, 1.2]
        ds.SliceThickness = 5.0
        ds.ImagePositionPatient = [-153.6, -153.6, -12.5 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -12.5 * k
        ds.KVP = 120
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        stored = np.clip(ct_slice(k, n_slices) + 1024, 0, 4095)
        grey_module(ds, stored, 12)
        paths.append(save(ds, out, name, "ct%02d.dcm" % (k + 1)))
    return paths


# ---- whole-slide pyramid -------------------------------------------------------

def slide_image(W, H, seed=5):
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), np.float32)
    img[:] = (242, 240, 244)                                   # glass
    y, x = np.mgrid[0:H, 0:W]
    blob = smooth(rng.random((H // 16, W // 16)), 4)
    blob = np.kron(blob, np.ones((16, 16)))[:H, :W]
    tissue = (((y - H * 0.5) / (H * 0.38)) ** 2 + ((x - W * 0.48) / (W * 0.36)) ** 2 < 1.0) & (blob > 0.47)
    img[tissue] = (226, 160, 200)                              # eosin pink
    n_nuclei = 2500
    cy = rng.integers(0, H, n_nuclei)
    cx = rng.integers(0, W, n_nuclei)
    for yy, xx in zip(cy, cx):
        if not tissue[yy, xx]:
            continue
        r = int(rng.integers(3, 6))
        y0, y1, x0, x1 = max(0, yy - r), min(H, yy + r), max(0, xx - r), min(W, xx + r)
        sub = ((y[y0:y1, x0:x1] - yy) ** 2 + (x[y0:y1, x0:x1] - xx) ** 2) <= r * r
        img[y0:y1, x0:x1][sub] = (95, 60, 150)                 # haematoxylin purple nuclei
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def tiles_full(img, t):
    H, W = img.shape[:2]
    ntx, nty = -(-W // t), -(-H // t)
    big = np.full((nty * t, ntx * t, 3), 255, np.uint8)
    big[:H, :W] = img
    return [big[ty * t:(ty + 1) * t, tx * t:(tx + 1) * t] for ty in range(nty) for tx in range(ntx)]


def downsample(img, f):
    H, W = img.shape[:2]
    return img[:H - H % f, :W - W % f].reshape(H // f, f, W // f, f, 3).mean(axis=(1, 3)).round().astype(np.uint8)


def write_slide(out, name):
    W, H, tile, spacing = 2048, 1536, 256, 0.0005            # 0.5 µm per pixel at the base
    level0 = slide_image(W, H)
    levels = [("VOLUME", level0, spacing), ("VOLUME", downsample(level0, 4), spacing * 4),
              ("THUMBNAIL", downsample(level0, 8), spacing * 8)]
    paths = []
    for i, (flavour, img, sp) in enumerate(levels):
        ds = base(name, "SM", ("DEMO-SM-1", "Demo^Slide^HE"), instance_no=i + 1)
        ds.SeriesDescription = "H&E slide (synthetic)"
        ds.ImageType = ["ORIGINAL" if i == 0 else "DERIVED", "PRIMARY", flavour, "NONE" if i == 0 else "RESAMPLED"]
        ds.FrameOfReferenceUID = uid(name, "for")
        ds.ContainerIdentifier = "DEMO-SLIDE-1"
        ds.SpecimenDescriptionSequence = Sequence()
        ds.AcquisitionDateTime = "20240315093000"
        ds.VolumetricProperties = "VOLUME"
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = img.shape[1], img.shape[0]
        ds.TotalPixelMatrixFocalPlanes = 1
        ds.ImagedVolumeWidth = img.shape[1] * sp
        ds.ImagedVolumeHeight = img.shape[0] * sp
        ds.ImagedVolumeDepth = 0.004
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem = 20.0
        origin.YOffsetInSlideCoordinateSystem = 40.0
        ds.TotalPixelMatrixOriginSequence = Sequence([origin])
        ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
        ds.NumberOfOpticalPaths = 1
        op = Dataset()
        op.OpticalPathIdentifier = "1"
        ds.OpticalPathSequence = Sequence([op])
        pm = Dataset()
        pm.PixelSpacing = [sp, sp]
        pm.SliceThickness = 0.004
        sh = Dataset()
        sh.PixelMeasuresSequence = Sequence([pm])
        ds.SharedFunctionalGroupsSequence = Sequence([sh])
        frames = [img] if flavour == "THUMBNAIL" else tiles_full(img, tile)
        th, tw = frames[0].shape[:2]
        ds.Rows, ds.Columns = th, tw
        ds.NumberOfFrames = len(frames)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = np.ascontiguousarray(np.stack(frames)).tobytes()
        ds["PixelData"].VR = "OB"
        paths.append(save(ds, out, name, "level%d.dcm" % i))
    return paths


def save(ds, *parts):
    path = os.path.join(*parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, write_like_original=False)
    return path


STUDIES = ["chest-xray-clear", "chest-xray-opacity", "ultrasound-breast", "fundus", "ct-phantom", "slide"]


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        sys.stderr.write(__doc__)
        return 2
    out = argv[1]
    write_chest(out, "chest-xray-clear", False, 1)
    write_chest(out, "chest-xray-opacity", True, 2)
    write_us(out, "ultrasound-breast", 3)
    write_fundus(out, "fundus", 4)
    write_ct(out, "ct-phantom")
    write_slide(out, "slide")
    for s in STUDIES:
        print(os.path.join(out, s))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
