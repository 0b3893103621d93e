#!/usr/bin/python3
"""Writes a deterministic WordPiece vocabulary for the tests (no real model
vocabulary is downloaded anywhere in this project).

    /usr/bin/python3 make_vocab.py --size 30522 --layout bert --out full_vocab.txt
    /usr/bin/python3 make_vocab.py --size 3000 --layout shuffled --out small_vocab.txt

Contents, in order: the special tokens; single characters (ASCII lower-case
letters, digits and punctuation, some Latin letters without decomposition,
Greek, symbols, some kana/jamo, CJK ideographs) each also as "##x"; then
whole words and sub-word pieces chosen by frequency from a small medical
corpus (the word list below plus sentences.txt); then "[unusedK]" lines up to
exactly --size lines.

--layout bert:     [PAD]=0, [unused0..98]=1..99, [UNK]=100, [CLS]=101,
                   [SEP]=102, [MASK]=103 (as BERT's vocab.txt).
--layout shuffled: [PAD]=0, [SEP]=3, [UNK]=5, [CLS]=7, [MASK]=11, the other
                   lines hold ordinary tokens (catches hard-coded ids).
"""
import argparse
import collections
import os
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))

MEDICAL_WORDS = """
abdomen abdominal abnormal abnormality abscess acute adenocarcinoma adenoma
adrenal airspace airway alveolar anemia aneurysm angiography ankle anterior
aorta aortic apex apical appendicitis appendix arterial artery arthritis
artifact ascites atelectasis atrial atrium atrophy axial azygos bacterial
basal benign bilateral biopsy bladder bleeding blood bone bones bowel brain
breast bronchial bronchiectasis bronchitis bronchus calcification calcified
calculus cancer carcinoma cardiac cardiomegaly cardiomyopathy carotid
cartilage cavity cell cells central cerebral cervical chest chronic cirrhosis
clavicle colitis colon compression condyle congenital congestion
consolidation contrast coronary cortex cortical cranial cyst cystic
degenerative density dermatitis diagnosis diaphragm diffuse dilated
dilatation disc disease dislocation distal diverticulitis dorsal duct
duodenum dysplasia edema effusion embolism emphysema encephalitis
endometrial enhancement enlarged enlargement epidural esophagus evidence
examination extremity femoral femur fibrosis fibrotic finding findings
fistula fluid focal follow foot fracture fractures frontal gallbladder
gallstone gastric glioma gland granuloma hand head healing heart hematoma
hemorrhage hepatic hepatomegaly hernia herniation hilar hip humerus
hydronephrosis hyperdense hyperintense hypertension hypodense hypoechoic
ileum image images imaging impression infarct infarction infection
infiltrate inflammation inflammatory inferior interstitial intestinal
intracranial ischemia ischemic joint kidney knee lateral left lesion lesions
ligament liver lobe lobar lower lumbar lung lungs lymph lymphadenopathy
lymphoma malignancy malignant mammography margin mass medial mediastinal
mediastinum melanoma meningioma meniscus metastasis metastases metastatic
midline mild moderate mri muscle myocardial nasal neck necrosis neoplasm
nerve neural nodular nodule nodules normal obstruction occlusion opacity
opacities orbital osteoarthritis osteomyelitis osteoporosis ovarian ovary
pancreas pancreatic pancreatitis parenchyma parenchymal patient pelvic
pelvis pericardial peripheral peritoneal photo pleural pneumonia
pneumothorax polyp posterior prostate proximal pulmonary radiograph
radiography radius rectum renal respiratory retina retinal retinopathy rib
ribs right rupture sarcoma scan sclerosis segment severe shoulder sinus
sinusitis skin skull small soft spine spinal spleen splenomegaly stenosis
stomach stroke subdural superior surgery swelling syndrome tendon thickening
thoracic thorax thrombosis thrombus thyroid tibia tissue trachea tract
trauma tuberculosis tumor ulcer ultrasound unremarkable upper ureter urinary
uterine uterus valve vascular vein venous ventricle ventricular vertebra
vertebral vessel vessels wall white wrist xray x ray ct pet
the of and a an in on with without no is are was were there this that for to
at by from as be or not seen shows showing showed demonstrates noted
likely suggest suggestive consistent compatible concerning cm mm ml mg kg
size measuring small large new old stable unchanged increased decreased
increase decrease interval prior study comparison seen due
photo picture slide scan view image of
""".split()

# Latin letters without a canonical decomposition, Greek, symbols.
EXTRA_CHARS = ("ßæøðþœıłđħŋəɛɔʃʒ"
               "αβγδεζηθικλμνξοπρςστυφχψω"
               "°±×÷µ·²³¹½¼¾‰€£¥©®™•…–—‘’“”«»„‹›←→↑↓≤≥≠≈∞√∑∆−′″♂♀✓✗①②③"
               "абвгдежзийклмнопрстуфхцчшщъыьэюя"
               "ぁあいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
               "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンー"
               "ᄀᄂᄃᄅᄆᄇᄉᄋᄌᄎᄏᄐᄑ하ᅢᅣᅥᅦᅧᅨᅩᅪᅭᅮᅯᅲᅳᅴᅵᆨᆫᆯᆷᆸᆼ"
               "ｃｔｍｒｉ")

# CJK ideographs: a medical set, then common characters.
CJK_CHARS = ("胸部线显示右下肺炎症结节建议随访患者男性岁咳嗽伴发热天头颅未见明显出血乳腺超声左低回"
             "肝脏平扫可多密度影考虑转移瘤心电图提窦律段抬高病理诊断胃分化癌写真葉認める脳梗塞所"
             "見査結果正常異状骨折腫瘍腹部臓器管血液検査治療医院手術影像检查结果异常上中大小"
             "的一是不了人我在有他这个们来到时要就出会可也你对生能而子那得于着下自之年过发后作里"
             "用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心"
             "她本前开但因只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外"
             "将两高间由问很最重并物手应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回"
             "特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认"
             "条平系气题活尔更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市"
             "直德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难")


def basic_tokens(text):
    """Lower-cased, accent-stripped words and punctuation, BERT style."""
    text = unicodedata.normalize('NFD', text)
    text = ''.join(c for c in text if unicodedata.category(c) != 'Mn').lower()
    words, cur = [], []
    for c in text:
        cp = ord(c)
        punct = unicodedata.category(c).startswith('P') or (cp < 128 and not c.isalnum() and not c.isspace())
        cjk = 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF
        if c.isspace() or punct or cjk:
            if cur:
                words.append(''.join(cur))
                cur = []
            if punct or cjk:
                words.append(c)
        else:
            cur.append(c)
    if cur:
        words.append(''.join(cur))
    return words


def corpus_counts(paths):
    counts = collections.Counter()
    for w in MEDICAL_WORDS:
        counts[w] += 3
    for p in paths:
        with open(p, encoding='utf-8') as f:
            for line in f:
                for w in basic_tokens(line):
                    if len(w) > 1 and len(w) <= 30:
                        counts[w] += 1
    return counts


def candidate_pieces(counts, max_piece=8):
    """Scores whole words, word-initial prefixes and "##" continuations."""
    score = collections.Counter()
    for w, n in counts.items():
        if not w.isascii() or not w.isalnum():
            continue
        score[w] += n * len(w) * 2
        for k in range(2, min(len(w), max_piece) + 1):
            score[w[:k]] += n * (k - 1)
        for s in range(1, len(w)):
            for k in range(2, min(len(w) - s, max_piece) + 1):
                score['##' + w[s:s + k]] += n * (k - 1)
    return sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))


def build(size, layout, corpus):
    specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    chars = []
    ascii_chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    n_cjk = len(CJK_CHARS) if size >= 10000 else 60
    for c in ascii_chars + list(EXTRA_CHARS) + list(CJK_CHARS[:n_cjk]):
        if c not in chars:
            chars.append(c)
    content = []
    seen = set(specials)
    for c in chars:
        for t in (c, '##' + c):
            if t not in seen:
                seen.add(t)
                content.append(t)
    budget = size - len(specials) - (99 if layout == 'bert' else 0) - len(content)
    if size < 10000:
        budget = min(budget, size // 2)  # leave room so many words split
    for tok, _ in candidate_pieces(corpus_counts(corpus)):
        if budget <= 0:
            break
        if tok in seen:
            continue
        seen.add(tok)
        content.append(tok)
        budget -= 1
    if layout == 'bert':
        lines = ['[PAD]'] + ['[unused%d]' % i for i in range(99)] + ['[UNK]', '[CLS]', '[SEP]', '[MASK]']
        unused = 99
        lines += content
    else:
        fixed = {0: '[PAD]', 3: '[SEP]', 5: '[UNK]', 7: '[CLS]', 11: '[MASK]'}
        lines, it = [], iter(content)
        unused = 0
        total = len(content) + len(fixed)
        for i in range(total):
            lines.append(fixed[i] if i in fixed else next(it))
    if len(lines) > size:
        sys.exit('vocab size %d too small for %d tokens' % (size, len(lines)))
    while len(lines) < size:
        lines.append('[unused%d]' % unused)
        unused += 1
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', type=int)
    ap.add_argument('--layout', choices=['bert', 'shuffled'])
    ap.add_argument('--out')
    ap.add_argument('--fixtures', metavar='DIR',
                    help='write the two test vocabularies: DIR/full_vocab.txt (30522, bert) '
                         'and DIR/small_vocab.txt (3000, shuffled)')
    ap.add_argument('--corpus', action='append',
                    help='extra text files for the word counts (default: sentences.txt here)')
    args = ap.parse_args()
    corpus = args.corpus or [os.path.join(HERE, 'sentences.txt')]
    if args.fixtures:
        jobs = [(30522, 'bert', os.path.join(args.fixtures, 'full_vocab.txt')),
                (3000, 'shuffled', os.path.join(args.fixtures, 'small_vocab.txt'))]
    elif args.size and args.layout and args.out:
        jobs = [(args.size, args.layout, args.out)]
    else:
        ap.error('give --size, --layout and --out, or --fixtures DIR')
    for size, layout, out in jobs:
        lines = build(size, layout, corpus)
        assert len(lines) == size and len(set(lines)) == len(lines)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        tmp = out + '.tmp'
        with open(tmp, 'w', encoding='utf-8', newline='\n') as f:
            f.write('\n'.join(lines) + '\n')
        os.replace(tmp, out)
        print('wrote %s (%d lines, %s layout)' % (out, size, layout))


if __name__ == '__main__':
    main()
