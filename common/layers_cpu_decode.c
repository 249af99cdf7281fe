// layers_cpu_decode.c: CPU back end of attention_decode_forward (see layers.h); kept apart
// from layers_cpu.c while that file is being written. To be merged into it.
#include "layers.h"

#include <math.h>
#include <string.h>

void attention_decode_forward(float *out, float *kcache, float *vcache, const float *qkv,
                              const int *seq, const int *pos, int n, int ctx, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static) if (n * (pos[0] + 1) * C > 65536)
    for (int i = 0; i < n; i++) {
        const float *q = qkv + (size_t)i * 3 * C;
        size_t base = ((size_t)seq[i] * ctx) * C;
        memcpy(kcache + base + (size_t)pos[i] * C, q + C, (size_t)C * sizeof(float));
        memcpy(vcache + base + (size_t)pos[i] * C, q + 2 * C, (size_t)C * sizeof(float));
        int P = pos[i] + 1;
        float att[P > 0 ? P : 1];
        for (int h = 0; h < NH; h++) {
            const float *qh = q + h * hs;
            float mx = -INFINITY;
            for (int p = 0; p < P; p++) {
                const float *k = kcache + base + (size_t)p * C + h * hs;
                float s = 0.0f;
                for (int d = 0; d < hs; d++)
                    s += qh[d] * k[d];
                att[p] = s * scale;
                if (att[p] > mx)
                    mx = att[p];
            }
            float sum = 0.0f;
            for (int p = 0; p < P; p++) {
                att[p] = expf(att[p] - mx);
                sum += att[p];
            }
            float inv = 1.0f / sum;
            float *o = out + (size_t)i * C + h * hs;
            memset(o, 0, (size_t)hs * sizeof(float));
            for (int p = 0; p < P; p++) {
                const float *v = vcache + base + (size_t)p * C + h * hs;
                float a = att[p] * inv;
                for (int d = 0; d < hs; d++)
                    o[d] += a * v[d];
            }
        }
    }
}
