"""Synthetic SDSS-like catalogues calibrated to the real SDSS17 statistics, generated on the Dask workers.

The model, per class (mix of GALAXY / QSO / STAR as in SDSS17):

* a Gaussian mixture over ``(r, u-g, g-r, r-i, i-z, asinh(redshift / 1e-3))``; ``u g i z`` follow from ``r``
  and the colours; draws outside the class's real range of each feature are redrawn (then clipped), and
  magnitudes are clipped to the real per-band range;
* sky position from the class's coarse sky histogram: a cell drawn by its count, then a uniform point in it;
* MJD from the class's empirical quantiles (linear between them).

Columns the real file lacks (run, camera column, field, plate, fiber, spectroscopic id) are plausible
fillers: plate grows with MJD as in SDSS, and ``spec_obj_ID`` carries the plate in its top 14 bits as SDSS
ids do (so plates >= 8192 give ids above 2**63). Nothing here reads the real data: the numbers below were
measured once by ``astrodask/_calibrate.py``.

Every partition is a pure function of ``(seed, index, n)``; ``run`` writes one file per partition, each
made and written by its own task on a worker, so the client never holds rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import schema
from .errors import ConfigError

# fmt: off
# Derived from the real SDSS17 catalogue (../shared/data/sdss17.csv beside the project, 99,999 rows) by
#     python -m astrodask._calibrate ../shared/data/sdss17.csv --components 10
# and pasted verbatim (numbers rounded to 5 significant digits). See astrodask/_calibrate.py for the meaning of
# every entry: gmm components are (weight, mean[6], Cholesky factor of the covariance, lower triangle by rows).
CALIBRATION = {
    'source': 'sdss17.csv (99999 rows)',
    'features': ('r', 'u-g', 'g-r', 'r-i', 'i-z', 'asinh(redshift/1e-3)'),
    'redshift_scale': 0.001,
    'sky_grid': {'alpha_step': 15.0, 'delta_step': 10.0, 'delta_min': -20.0},
    'fractions': {'GALAXY': 0.59446, 'QSO': 0.18961, 'STAR': 0.21593},
    'band_range': {
        'u': (10.996, 32.781),
        'g': (10.498, 31.602),
        'r': (9.8221, 29.572),
        'i': (9.4699, 32.141),
        'z': (9.6123, 29.384),
    },
    'gmm': {
        'GALAXY': (
            (0.16027, (20.681, 2.3201, 1.7219, 1.049, 0.4861, 7.0072), (0.43174, -0.54859, 1.2408, -0.016342,
             -0.073583, 0.24482, 0.080742, -0.0048193, 0.025059, 0.12837, 0.03534, -0.00046437, 0.005552, 0.017336,
             0.12531, 0.057413, -0.0030156, 0.012934, 0.07955, 0.012561, 0.065848)),
            (0.14544, (17.138, 1.7497, 0.93802, 0.43739, 0.32751, 5.4253), (0.64967, -0.068283, 0.30045, 0.0085694,
             0.12636, 0.10106, 0.0028359, 0.02209, 0.028296, 0.029675, -0.0055066, 0.037826, 0.023087, 0.010041,
             0.029243, 0.16424, 0.0023603, 0.21448, -0.031656, -0.047867, 0.17875)),
            (0.12832, (19.629, 2.6836, 1.7547, 0.77792, 0.43465, 6.7472), (0.63908, -0.43718, 1.3543, -0.014133,
             -0.007097, 0.11883, 0.097523, -0.0013636, -0.006052, 0.078241, 0.023968, -0.0018161, 0.005755,
             0.017282, 0.068932, 0.12591, -0.013528, -0.0015657, 0.084124, 0.010573, 0.079228)),
            (0.11091, (20.43, 0.9785, 1.4582, 0.92885, 0.43664, 7.0029), (0.41454, -0.11522, 0.59924, -0.062031,
             -0.0029769, 0.31683, 0.064382, -0.015266, 0.05652, 0.12337, -0.001761, -0.0082034, 0.035002, 0.020291,
             0.12627, 0.067069, -0.024506, -0.054188, 0.074214, 0.0045332, 0.090761)),
            (0.09914, (21.611, 0.94453, 1.9053, 1.2078, 0.75014, 7.2399), (0.47105, -0.35776, 1.4491, -0.05249,
             -0.3605, 0.65906, 0.10775, -0.0088868, 0.014611, 0.16203, 0.17207, -0.0073253, 0.010624, -0.061098,
             0.16162, 0.077765, -0.0017598, 0.0018638, 0.012412, 0.056793, 0.13212)),
            (0.096158, (18.203, 2.148, 1.5162, 0.57386, 0.37433, 6.2487), (0.67876, -0.029276, 0.49328, 0.16657,
             0.013081, 0.1204, 0.048039, 0.0020814, 0.021377, 0.033239, 0.014149, -0.0009246, 0.0072427, 0.013451,
             0.039882, 0.21834, 0.00071513, 0.12387, -0.0038837, -0.021223, 0.089771)),
            (0.092912, (16.937, 1.3873, 0.62995, 0.36131, 0.22815, 4.7621), (1.1647, -0.13315, 0.31528, -0.063328,
             0.17228, 0.099669, -0.012447, 0.067774, 0.051179, 0.046642, -0.037035, 0.073633, 0.041219, 0.0025422,
             0.04861, 0.3288, 0.11669, 0.20199, 0.2143, -0.085384, 0.38878)),
            (0.076511, (22.045, 0.60615, 0.56614, 0.65244, 0.28579, 7.4308), (0.52998, -0.023921, 0.86291, -0.12992,
             -0.05964, 0.3659, 0.11678, 0.019554, 0.0087823, 0.35721, 0.025014, -0.039743, 0.00059174, -0.064511,
             0.53781, 0.030928, -0.0094985, -0.041494, -0.051555, 0.020811, 0.15811)),
            (0.062845, (20.138, 1.5777, 0.97522, 0.47959, 0.27253, 6.2989), (1.3069, -0.30187, 1.1655, -0.082695,
             0.20941, 0.46562, -0.024176, 0.12179, 0.16676, 0.21205, -0.0012042, 0.026189, 0.10015, -0.015873,
             0.25811, 0.36366, 0.081951, 0.2917, 0.062167, 0.071431, 0.58357)),
            (0.027499, (20.983, 0.99894, 0.78, 0.45187, 0.092275, 4.1729), (1.9844, -0.37455, 1.5758, -0.44971,
             -0.43364, 1.2942, 0.51977, 0.11907, -0.21126, 1.2185, 0.20607, -0.13515, 0.092019, -0.41583, 1.3624,
             1.1567, -0.091818, 0.54173, -0.16226, -0.46491, 2.7195)),
        ),
        'QSO': (
            (0.16431, (20.955, 0.18676, 0.23273, 0.22068, 0.041966, 8.0133), (0.57907, -0.029792, 0.2452, -0.070495,
             -0.015251, 0.19844, 0.058024, 0.072329, -0.05053, 0.14384, 0.041121, 0.025744, 0.046885, -0.001683,
             0.22435, 0.05121, 0.044467, -0.089431, 0.075687, 0.010789, 0.091719)),
            (0.16424, (20.309, 0.48518, 0.11452, 0.1079, 0.22474, 8.4053), (0.86333, -0.024754, 0.30718, -0.025122,
             0.029143, 0.12158, -0.0038446, -0.05584, 0.01846, 0.10185, 0.02564, 0.025916, 0.0045725, 0.0028784,
             0.13119, -0.0095874, 0.09361, -0.0079078, -0.029546, -0.0036226, 0.05803)),
            (0.12857, (20.165, 0.34844, 0.18842, 0.084937, 0.18654, 7.4212), (0.89892, 0.0039736, 0.20125, 0.04567,
             -0.015328, 0.13412, 0.034922, 0.069344, -0.010108, 0.13828, 0.075712, 0.029669, 0.017412, -0.028117,
             0.14269, 0.048982, -0.12293, 0.11502, -0.097118, -0.0023701, 0.11205)),
            (0.11917, (21.625, 0.36528, 0.21305, 0.14315, 0.034804, 8.0077), (0.35942, 0.041044, 0.43537, -0.061509,
             -0.081482, 0.20595, 0.061692, 0.0094582, -0.071405, 0.18915, 0.063233, 0.036977, 0.074116, -0.072863,
             0.51371, 0.083833, 0.044513, -0.087628, -0.02781, -0.064098, 0.33257)),
            (0.11297, (21.001, 1.3321, 0.79881, 0.54113, 0.34462, 7.7931), (0.9405, -0.0288, 1.0971, -0.027276,
             -0.001345, 0.55735, 0.068114, -0.035166, 0.29031, 0.26378, 0.081863, -0.028257, 0.15412, 0.065419,
             0.25221, 0.079089, 0.071356, -0.05105, -0.061041, 0.0088071, 0.8716)),
            (0.11199, (19.589, 0.19153, 0.19326, 0.16086, -0.0096525, 7.9762), (0.82189, -0.010507, 0.14903,
             -0.018624, 0.031176, 0.1456, 0.022947, 0.039223, -0.059919, 0.10608, 0.0047367, 0.020221, -0.002326,
             0.032502, 0.082461, 0.022469, 0.016052, -0.11647, 0.099887, 0.0053139, 0.07493)),
            (0.10043, (21.19, 1.1122, 0.15508, 0.041767, 0.30152, 8.5389), (0.57799, -0.12239, 0.68173, -0.079744,
             0.061907, 0.14617, -0.031901, -0.010461, -0.0089469, 0.17805, 0.11317, -0.082321, -0.019863, -0.01834,
             0.29091, -0.04897, 0.081422, 0.02166, -0.019316, -0.025715, 0.08284)),
            (0.039945, (18.974, 0.58157, 0.50067, 0.32855, 0.31311, 6.4607), (1.4376, -0.12155, 0.4498, -0.062297,
             0.2554, 0.22402, 0.0088438, 0.1066, 0.058355, 0.13076, 0.028903, 0.0086131, 0.0049589, -0.10604,
             0.12847, 0.48238, -0.10796, -0.096171, -0.11816, 0.043866, 0.2996)),
            (0.035205, (20.253, 2.7764, 0.65927, 0.13187, 0.051206, 8.8037), (0.95591, 0.24387, 1.152, 0.047653,
             0.039894, 0.44759, -0.002487, 0.010707, 0.024606, 0.12156, -0.046556, -0.01105, 0.023484, 0.016771,
             0.19313, 0.0094389, 0.016811, 0.08731, -0.0071044, -0.0047218, 0.043574)),
            (0.023183, (22.023, 0.78189, 1.0687, 0.42495, 0.43407, 7.8721), (1.4203, -0.47277, 1.8182, -0.80351,
             -0.82047, 1.2551, 1.321, 0.067367, 0.069027, 1.4009, -0.0030295, -0.16846, 0.25947, -0.9382, 1.3473,
             -0.013898, -0.033639, 0.03857, 0.078434, -0.10347, 1.0466)),
        ),
        'STAR': (
            (0.22525, (17.731, 1.0761, 0.39904, 0.15537, 0.058536, -0.16755), (1.0647, -0.029605, 0.18747,
             -0.0091117, 0.10204, 0.055734, -0.0052085, 0.043058, 0.025659, 0.019844, -0.0020505, 0.029399,
             0.020257, 0.0032631, 0.02604, -0.0034968, 0.01388, -0.0059036, -0.035257, -0.01412, 0.41643)),
            (0.17094, (18.573, 1.3336, 0.43274, 0.15169, 0.059164, -0.14915), (1.3719, -0.0985, 0.63256, 0.0011028,
             0.39273, 0.21538, -0.0016072, 0.19519, 0.10255, 0.047438, -0.0062972, 0.13609, 0.062152, 0.010333,
             0.06888, -0.035297, 0.00372, 0.025043, -0.021325, -0.017854, 0.3301)),
            (0.1511, (16.723, 1.7464, 0.70704, 0.26429, 0.13489, -0.044336), (1.0841, 0.11974, 0.46775, 0.074703,
             0.22878, 0.062199, 0.033464, 0.084363, 0.036303, 0.02188, 0.028625, 0.055936, 0.027064, 0.011624,
             0.018938, 0.0038442, 0.01583, -0.0061892, -0.0046064, -0.0029167, 0.13123)),
            (0.10174, (20.616, 0.96248, 0.24315, 0.089537, 0.16297, -0.16127), (0.72362, -0.084312, 0.32594,
             -0.060974, 0.043441, 0.15993, -0.029216, 0.041419, 0.051714, 0.12149, 0.080544, 0.013109, 0.038012,
             -0.01856, 0.19032, 0.036896, -0.030629, -0.039279, -0.0011812, -0.012074, 0.5195)),
            (0.08718, (20.274, 2.3184, 1.4657, 1.225, 0.68961, -0.0089656), (0.96185, -0.4989, 0.95992, 0.021439,
             0.0046334, 0.19694, 0.2295, -0.015218, 0.20277, 0.39218, 0.12915, -0.014326, 0.1109, 0.20231, 0.070158,
             -0.010661, -0.0032275, 0.011173, -0.0076961, 0.0050296, 0.14653)),
            (0.081264, (20.934, 2.3119, 0.42182, 0.15051, 0.009158, -0.21709), (0.59452, -0.39076, 1.0268, -0.16486,
             0.10599, 0.17995, -0.062289, 0.038151, 0.033307, 0.11956, -0.050569, 0.085578, 0.046026, -0.022679,
             0.28763, 0.0018119, -0.0097421, 0.014947, -0.0027237, 0.0051197, 0.43987)),
            (0.068618, (21.413, 1.4706, 1.5115, 1.3149, 0.77661, -0.041988), (1.0666, -0.87799, 1.1271, 0.034515,
             -0.24282, 0.50638, 0.42663, -0.035764, 0.071855, 0.4237, 0.36701, -0.042702, 0.050313, 0.15471,
             0.27266, -0.0059057, -0.0053241, 0.01245, 0.020927, -0.00092797, 0.16015)),
            (0.043266, (19.601, 1.341, 0.6702, 0.36422, 0.26781, 0.032661), (2.2668, -0.2943, 0.94415, -0.089251,
             0.28587, 0.58863, 0.030169, 0.1414, 0.25153, 0.46693, 0.031378, 0.076149, 0.16893, 0.048802, 0.50881,
             0.044016, -0.036414, -0.022459, 0.024557, -0.053646, 0.75741)),
            (0.043183, (18.207, 2.562, 1.4495, 1.0031, 0.55332, 0.0070184), (1.0547, -0.046049, 0.3079, 0.035072,
             0.0067292, 0.078497, 0.067582, -0.047921, 0.15768, 0.24622, 0.041697, -0.025661, 0.085687, 0.12511,
             0.023078, 0.01465, 0.010642, 0.01095, -0.015345, 0.0053701, 0.11297)),
            (0.027465, (21.18, 1.6374, 0.63151, 0.90832, -0.01564, -0.095699), (2.4688, -0.40624, 2.1399, -1.2104,
             -1.0827, 1.6934, 1.2481, 0.32484, -0.13544, 1.5612, 0.28101, -0.54055, -0.44728, -1.3666, 2.0429,
             -0.02688, -0.010042, 0.016925, 0.046541, 0.006141, 0.33402)),
        ),
    },
    'bounds': {
        'GALAXY': ((11.747, -12.748, -12.319, -12.379, -13.162, -2.9953), (29.572, 9.715, 14.315, 10.73, 8.2732,
         8.2918)),
        'QSO': ((12.358, -5.9673, -6.0471, -14.649, -6.5728, 0.44572), (27.397, 18.625, 11.592, 7.4375, 12.547,
         9.5484)),
        'STAR': ((9.8221, -6.5124, -9.5673, -7.6836, -9.8858, -2.1272), (29.374, 11.241, 10.386, 12.206, 13.427,
         2.1312)),
    },
    'sky': {
        'GALAXY': (
            '67 36 3 0 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 15',
            '1211 1325 1511 291 25 10 1 0 21 53 223 390 313 280 282 181 26 0 0 0 74 268 260 463',
            '1018 830 524 613 0 3 1 23 510 510 385 692 625 883 339 291 92 0 0 0 18 1188 1062 1157',
            '604 736 25 0 4 0 0 286 924 1260 637 198 205 401 846 855 653 14 2 0 0 209 710 661',
            '676 272 45 0 4 0 4 354 978 843 994 542 354 457 609 809 958 209 0 0 0 45 512 920',
            '134 135 30 0 0 0 0 210 1125 1121 808 631 800 769 712 1079 900 220 0 0 0 16 146 190',
            '0 0 0 14 0 0 0 342 632 556 554 556 668 1090 1162 1039 518 90 0 0 0 0 0 0',
            '0 0 0 0 0 0 0 102 552 542 417 451 422 562 756 434 402 6 0 0 5 0 0 0',
            '0 0 0 0 0 0 0 0 93 166 231 328 232 235 211 97 15 26 0 0 0 0 0 0',
            '0 0 0 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0 1 0 0 1 0 0',
            '0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
        ),
        'QSO': (
            '40 4 0 0 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0 0 0 0 0 3',
            '236 270 379 54 1 7 0 0 25 27 52 79 88 41 58 42 5 0 0 0 11 57 42 192',
            '503 448 261 108 1 5 0 4 103 158 60 79 113 92 69 83 34 0 0 0 4 443 431 466',
            '238 392 9 1 2 0 0 70 119 187 94 63 64 49 201 156 123 1 0 0 0 35 171 273',
            '200 80 10 0 3 0 2 143 238 97 115 130 70 99 82 142 107 50 1 0 0 17 145 465',
            '44 42 19 3 0 0 0 132 371 367 312 139 247 323 255 296 509 159 0 0 0 1 44 103',
            '0 1 0 0 0 0 0 250 368 181 221 455 510 485 457 352 327 20 0 0 0 0 0 0',
            '0 0 0 0 0 0 0 46 175 271 166 320 286 152 275 245 172 5 0 0 3 0 0 0',
            '0 0 0 0 0 0 1 1 19 21 33 34 43 25 27 14 3 4 0 0 0 0 0 0',
            '0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0 1 0 0',
            '0 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
        ),
        'STAR': (
            '150 51 0 0 0 0 0 0 0 0 0 60 0 0 0 0 0 12 0 0 133 0 0 1',
            '448 267 228 253 31 83 23 62 133 57 78 121 188 55 107 89 8 0 0 0 70 59 36 212',
            '308 331 345 565 23 33 53 71 259 193 117 119 162 102 110 155 113 4 0 0 57 358 279 291',
            '144 142 12 32 35 1 2 166 252 222 217 108 106 94 138 219 267 5 30 0 12 140 192 240',
            '185 51 199 0 97 0 86 204 289 56 111 96 116 116 98 244 259 185 52 0 0 38 195 464',
            '56 88 141 64 22 0 39 221 351 236 169 63 141 178 192 273 569 193 0 20 0 7 66 143',
            '0 55 0 32 0 0 0 437 349 147 157 225 361 313 283 258 259 24 24 8 0 30 23 30',
            '0 0 0 0 0 0 0 52 205 241 86 191 233 138 205 171 129 7 0 0 24 0 0 17',
            '0 0 0 0 0 35 39 60 43 49 42 59 39 45 16 10 64 31 19 10 14 0 20 0',
            '0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 23 6 20 12 4 0',
            '0 0 0 0 0 2 4 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
        ),
    },
    'mjd': {
        'GALAXY': (51608, 52221, 52642, 52941, 53415, 53845, 54537, 55361, 55539, 55651, 55830, 55978, 56067, 56239,
         56370, 56543, 56739, 57369, 57814, 58132, 58932),
        'QSO': (51608, 52790, 54510, 55449, 55630, 55868, 56041, 56301, 56443, 56722, 56955, 57104, 57364, 57450,
         57659, 57870, 58069, 58171, 58257, 58433, 58932),
        'STAR': (51608, 52524, 52931, 53239, 53557, 53905, 54233, 54505, 54623, 54831, 54924, 55244, 55557, 55829,
         56045, 56365, 56625, 56957, 57448, 58154, 58932),
    },
}
# fmt: on

OBJ_ID_BASE = 1237645942904389632  # a real SDSS objID; synthetic ids are BASE + index * 2**32 + row
ROW_BITS = 32
MAX_PARTITION_ROWS = 2**ROW_BITS
MAX_PARTITIONS = 2**18  # spec_obj_ID keeps (index, row) in its low 50 bits: 18 + 32
ROWS_PER_PARTITION = 1_000_000
REDRAWS = 10  # rounds of redrawing out-of-range mixture samples before clipping

# Plausible ranges of the columns SDSS17 lacks (those of the full Kaggle SDSS17 export).
RUN_ID = (94, 8162)
RERUN_ID = 301
CAM_COL = (1, 6)
FIELD_ID = (11, 989)
PLATE = (266, 12547)
FIBER_ID = (1, 1000)
PLATE_MJD = (51608, 58932)  # MJD of the first and last plate: plate ~ linear in MJD, plus noise
PLATE_SCATTER = 300.0
_LOW50 = (1 << 50) - 1
_MIX = 0x9E3779B97F4A7C15 & _LOW50 | 1  # odd: multiplying by it permutes the integers mod 2**50

ARROW_SCHEMA = schema.arrow_schema(schema.COLUMNS)
CSV_DECIMALS = {"alpha": 7, "delta": 7, **{b: 5 for b in schema.BANDS}, **{b: 4 for b in schema.PSF_BANDS}}
CSV_SIGNIFICANT = {schema.REDSHIFT: 7}


@dataclass(frozen=True)
class _ClassModel:
    fraction: float
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, 6)
    chol: np.ndarray  # (K, 6, 6) lower-triangular
    lo: np.ndarray  # (6,)
    hi: np.ndarray  # (6,)
    sky_p: np.ndarray  # (cells,) probability of each sky cell
    sky_alpha0: np.ndarray  # (cells,) lower right ascension of each cell
    sky_delta0: np.ndarray  # (cells,) lower declination of each cell
    mjd_q: np.ndarray  # MJD at equally spaced quantiles


@lru_cache(maxsize=1)
def _models() -> tuple[_ClassModel, ...]:
    """The calibration as arrays, one model per class in ``schema.CLASSES`` order (built once per process)."""
    cal = CALIBRATION
    grid = cal["sky_grid"]
    total = sum(cal["fractions"][c] for c in schema.CLASSES)
    models = []
    for c in schema.CLASSES:
        comps = cal["gmm"][c]
        d = len(comps[0][1])
        tril = np.tril_indices(d)
        chol = np.zeros((len(comps), d, d))
        for k, comp in enumerate(comps):
            chol[k][tril] = comp[2]
        w = np.array([comp[0] for comp in comps])
        counts = np.array([[float(v) for v in row.split()] for row in cal["sky"][c]])
        rows, cols = np.nonzero(counts)
        lo, hi = (np.array(b, dtype=np.float64) for b in cal["bounds"][c])
        models.append(_ClassModel(
            fraction=cal["fractions"][c] / total,
            weights=w / w.sum(),
            means=np.array([comp[1] for comp in comps]),
            chol=chol,
            lo=lo,
            hi=hi,
            sky_p=counts[rows, cols] / counts.sum(),
            sky_alpha0=cols * grid["alpha_step"],
            sky_delta0=grid["delta_min"] + rows * grid["delta_step"],
            mjd_q=np.array(cal["mjd"][c], dtype=np.float64),
        ))
    return tuple(models)


def _draw(rng: np.random.Generator, m: _ClassModel, comp: np.ndarray) -> np.ndarray:
    x = rng.standard_normal((len(comp), m.means.shape[1]))
    for k in range(len(m.weights)):
        sel = comp == k
        if sel.any():
            x[sel] = m.means[k] + x[sel] @ m.chol[k].T
    return x


def _features(rng: np.random.Generator, m: _ClassModel, n: int) -> np.ndarray:
    """``n`` draws of the class's mixture, within the class's real range of every feature."""
    comp = np.repeat(np.arange(len(m.weights)), rng.multinomial(n, m.weights))
    x = _draw(rng, m, comp)
    for _ in range(REDRAWS):
        bad = ((x < m.lo) | (x > m.hi)).any(axis=1)
        if not bad.any():
            break
        x[bad] = _draw(rng, m, comp[bad])
    return np.clip(x, m.lo, m.hi)


def _sky(rng: np.random.Generator, m: _ClassModel, n: int) -> tuple[np.ndarray, np.ndarray]:
    grid = CALIBRATION["sky_grid"]
    cell = rng.choice(len(m.sky_p), size=n, p=m.sky_p)
    alpha = m.sky_alpha0[cell] + rng.random(n) * grid["alpha_step"]
    delta = m.sky_delta0[cell] + rng.random(n) * grid["delta_step"]
    alpha = np.where(alpha >= 360.0, alpha - 360.0, alpha)  # float rounding at the last cell's edge
    return alpha, np.clip(delta, -90.0, 90.0)


def _mjd(rng: np.random.Generator, m: _ClassModel, n: int) -> np.ndarray:
    return np.rint(np.interp(rng.random(n), np.linspace(0.0, 1.0, len(m.mjd_q)), m.mjd_q))


# PSF minus model magnitude (the SDSS star/galaxy separator: objects with psfMag - cModelMag > 0.145 in r are
# extended). Point sources (stars, quasars) scatter around 0 with the photometric noise, which grows fainter;
# galaxies are clearly positive, by less for fainter (smaller) ones: ~1.4 mag at r = 15 down to ~0.4 at r = 22.
PSF_NOISE = (0.02, 20.5)  # sigma = 0.02 * (1 + 10**(0.4 (m - 20.5))): 0.02 bright, ~0.1 at m = 22.3
PSF_GALAXY = (1.4, 15.0, 0.14, 0.25)  # mean = 1.4 - 0.14 (r - 15), at least 0.25; lognormal scatter 0.25
PSF_BAND_SCALE = {"u": 0.8, "g": 1.0, "r": 1.0, "i": 1.0, "z": 0.9}


def psf_magnitudes(rng: np.random.Generator, mags: dict, classes: np.ndarray) -> dict:
    """``psf_u..psf_z`` from model magnitudes ``mags`` and classes (drawn from ``rng``, after the rest)."""
    r = mags["r"].astype(np.float64)
    gal = classes == "GALAXY"
    a, r0, slope, floor = PSF_GALAXY
    ext = np.maximum(a - slope * (r - r0), floor) * np.exp(rng.normal(0.0, 0.25, len(r)) - 0.03)
    out = {}
    for b in schema.BANDS:
        m = mags[b].astype(np.float64)
        sigma = PSF_NOISE[0] * (1 + 10 ** (0.4 * (m - PSF_NOISE[1])))
        delta = np.where(gal, ext * PSF_BAND_SCALE[b], 0.0) + rng.normal(0.0, 1.0, len(m)) * sigma
        lo, hi = schema.MAGNITUDE_RANGE
        out[f"psf_{b}"] = np.clip(m + delta, lo, hi).astype(np.float32)
    return out


def synth_partition(index: int, n: int, seed: int = 0) -> pd.DataFrame:
    """Partition ``index`` of a synthetic catalogue: ``n`` rows, a pure function of ``(seed, index, n)``.

    Columns are ``schema.COLUMNS`` in order with the dtypes of ``schema.TYPES`` (``class`` as ``str``).
    ``obj_ID`` is ``OBJ_ID_BASE + index * 2**32 + row`` and ``spec_obj_ID`` is unique over all partitions
    of one catalogue (``index < 2**18``, ``n <= 2**32``).
    """
    index, n, seed = int(index), int(n), int(seed)
    if not 0 <= index < MAX_PARTITIONS:
        raise ValueError(f"partition index {index} out of range [0, {MAX_PARTITIONS})")
    if not 0 <= n <= MAX_PARTITION_ROWS:
        raise ValueError(f"rows per partition {n} out of range [0, {MAX_PARTITION_ROWS}]")
    if seed < 0:
        raise ValueError(f"seed {seed} is negative")
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    models = _models()
    counts = rng.multinomial(n, [m.fraction for m in models])
    x = np.empty((n, models[0].means.shape[1]))
    alpha, delta, mjd = np.empty(n), np.empty(n), np.empty(n)
    start = 0
    for m, k in zip(models, counts):
        sl = slice(start, start + k)
        x[sl] = _features(rng, m, k)
        alpha[sl], delta[sl] = _sky(rng, m, k)
        mjd[sl] = _mjd(rng, m, k)
        start += k
    cls = np.repeat(np.arange(len(models)), counts)
    perm = rng.permutation(n)
    x, alpha, delta, mjd, cls = x[perm], alpha[perm], delta[perm], mjd[perm], cls[perm]

    r = x[:, 0]
    g = r + x[:, 2]
    u = g + x[:, 1]
    i = r - x[:, 3]
    z = i - x[:, 4]
    mags = {}
    for b, v in zip(schema.BANDS, (u, g, r, i, z)):
        lo, hi = CALIBRATION["band_range"][b]
        mags[b] = np.clip(v, lo, hi).astype(np.float32)
    redshift = (CALIBRATION["redshift_scale"] * np.sinh(x[:, 5])).astype(np.float32)

    plate_lo, plate_hi = PLATE
    mjd_lo, mjd_hi = PLATE_MJD
    plate = plate_lo + (mjd - mjd_lo) / (mjd_hi - mjd_lo) * (plate_hi - plate_lo) + rng.normal(0, PLATE_SCATTER, n)
    plate = np.clip(np.rint(plate), plate_lo, plate_hi).astype(np.uint64)
    serial = (np.uint64(index) << np.uint64(ROW_BITS)) + np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        low = (serial * np.uint64(_MIX)) & np.uint64(_LOW50)
    spec_obj_id = (plate << np.uint64(50)) | low

    psf = psf_magnitudes(np.random.default_rng(np.random.SeedSequence([seed, index, 1])), mags,
                         np.asarray(schema.CLASSES)[cls])
    cols = {
        schema.ID: np.uint64(OBJ_ID_BASE) + serial,
        "alpha": alpha,
        "delta": delta,
        **mags,
        **psf,
        "run_ID": rng.integers(RUN_ID[0], RUN_ID[1] + 1, n).astype(np.uint32),
        "rerun_ID": np.full(n, RERUN_ID, dtype=np.uint32),
        "cam_col": rng.integers(CAM_COL[0], CAM_COL[1] + 1, n).astype(np.uint8),
        "field_ID": rng.integers(FIELD_ID[0], FIELD_ID[1] + 1, n).astype(np.uint32),
        "spec_obj_ID": spec_obj_id,
        schema.CLASS: pd.array(np.asarray(schema.CLASSES, dtype=object)[cls], dtype="str"),
        schema.REDSHIFT: redshift,
        "plate": plate.astype(np.uint32),
        "MJD": mjd.astype(np.uint32),
        "fiber_ID": rng.integers(FIBER_ID[0], FIBER_ID[1] + 1, n).astype(np.uint32),
    }
    return pd.DataFrame({c: cols[c] for c in schema.COLUMNS})


# ------------------------------------------------------------------------------------------------ writing


def _round_significant(x: np.ndarray, digits: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    mag = np.floor(np.log10(np.abs(x), out=np.zeros_like(x), where=x != 0))
    scale = 10.0 ** (digits - 1 - mag)
    return np.round(x * scale) / scale


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with float columns rounded so the CSV prints them with sensible precision."""
    out = df.copy()
    for c, d in CSV_DECIMALS.items():
        out[c] = np.round(df[c].to_numpy(np.float64), d)
    for c, d in CSV_SIGNIFICANT.items():
        out[c] = _round_significant(df[c].to_numpy(np.float64), d)
    return out


def _write_csv(df: pd.DataFrame, path) -> None:
    """One CSV with a header (Kaggle SDSS17 column names), written whole (see storage.Location.write_bytes)."""
    from .storage import Location

    Location.of(path).write_bytes(_csv_frame(df).to_csv(index=False).encode())


def write_sample_csv(path: str | os.PathLike, rows: int = 20000, seed: int = 0) -> Path:
    """Write ``rows`` synthetic rows (partition 0 of ``seed``) to one CSV at ``path``, in this process."""
    path = Path(path)
    _write_csv(synth_partition(0, rows, seed=seed), path)
    return path


def _part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{fmt}"


def write_partition(index: int, n: int, staging, seed: int, fmt: str) -> dict:
    """Task: generate partition ``index`` and write it into ``staging``; return its file name and rows."""
    from .storage import Location, write_parquet_atomic

    df = synth_partition(index, n, seed=seed)
    path = Location.of(staging) / _part_name(index, fmt)
    if fmt == "parquet":
        write_parquet_atomic(pa.Table.from_pandas(df, schema=ARROW_SCHEMA, preserve_index=False), path)
    else:
        _write_csv(df, path)
    return {"file": path.name, "rows": len(df)}


@dataclass(frozen=True)
class SynthConfig:
    """What ``astrodask synth`` makes."""

    rows: int
    """Total number of rows to generate (at least 1)."""
    dest: str
    """Output directory; it must not exist unless ``overwrite``."""
    partitions: int | None = None
    """Number of output files (one task each); None: about 1,000,000 rows per file, at least 1."""
    seed: int = 0
    """Random seed (>= 0); the same seed, rows and partitions give the same catalogue."""
    format: str = "parquet"
    """``"parquet"`` (a dataset the other stages read) or ``"csv"`` (Kaggle SDSS17 column names)."""
    overwrite: bool = False
    """Replace ``dest`` if it exists."""
    quiet: bool = False
    """No progress bar."""

    def __post_init__(self):
        if isinstance(self.rows, bool) or not isinstance(self.rows, (int, np.integer)) or self.rows < 1:
            raise ConfigError("rows", f"must be a positive whole number, got {self.rows!r}", "pass e.g. --rows 1e6")
        if not isinstance(self.dest, (str, os.PathLike)) or not str(self.dest).strip():
            raise ConfigError("dest", f"must be a directory path, got {self.dest!r}", "pass an output directory")
        if self.partitions is not None:
            p = self.partitions
            if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
                raise ConfigError("partitions", f"must be a positive whole number, got {p!r}",
                                  "pass e.g. --partitions 8, or leave it out for ~1M rows per file")
            if p > self.rows:
                raise ConfigError("partitions", f"{p} is more than the {self.rows} rows",
                                  "use at most one partition per row")
        n_parts = self.n_partitions
        if n_parts > MAX_PARTITIONS:
            raise ConfigError("partitions" if self.partitions else "rows",
                              f"{n_parts:,} partitions exceed the limit of {MAX_PARTITIONS:,}",
                              "use fewer partitions (up to 2**32 rows each) or fewer rows")
        if -(-self.rows // n_parts) > MAX_PARTITION_ROWS:
            raise ConfigError("partitions", f"more than {MAX_PARTITION_ROWS:,} rows per partition",
                              "use more partitions")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError("seed", f"must be a whole number >= 0, got {self.seed!r}", "pass e.g. --seed 0")
        if self.format not in ("parquet", "csv"):
            raise ConfigError("format", f"unknown format {self.format!r}", "use parquet or csv")

    @property
    def n_partitions(self) -> int:
        if self.partitions is not None:
            return int(self.partitions)
        return max(1, math.ceil(self.rows / ROWS_PER_PARTITION))

    def partition_rows(self) -> list[int]:
        """Rows of each partition: as equal as possible, the first ones one row longer."""
        q, r = divmod(int(self.rows), self.n_partitions)
        return [q + (1 if k < r else 0) for k in range(self.n_partitions)]


def run(cfg: SynthConfig, client) -> dict:
    """Generate the catalogue ``cfg`` on the workers of ``client`` (one task per file) and commit it."""
    from .console import track
    from .storage import Location, StagedOutput

    sizes = cfg.partition_rows()
    fp = {"stage": "synth", "rows": int(cfg.rows), "partitions": len(sizes), "seed": int(cfg.seed),
          "format": cfg.format}
    with StagedOutput(Location.of(cfg.dest), cfg.overwrite, False, kind="dataset", fingerprint=fp) as out:
        futures = client.map(write_partition, range(len(sizes)), sizes, staging=out.staging,
                             seed=int(cfg.seed), fmt=cfg.format, pure=False)
        parts = track(futures, "synth", cfg.quiet)
        written = sum(p["rows"] for p in parts)
        out.commit({
            "schema_version": schema.SCHEMA_VERSION,
            "columns": list(schema.COLUMNS),
            "synthetic": True,
            "seed": int(cfg.seed),
            "rows": written,
            "format": cfg.format,
            "parts": parts,
            "read": written,
            "written": written,
            "quarantined": 0,
            "reasons": {},
        })
        dest = out.dest
    return {"dest": str(dest), "rows": written, "files": len(parts)}
