// srdeploy's upscaler on ncnn (see srdeploy_sr.h). Every rule here is the Python pipeline's, named where it is:
// runtime/tiling.py (tiles and the gate's mean), runtime/global_gate.py (the decision), runtime/pipeline.py and
// runtime/images.py (colour, rounding, Pillow's bicubic).
#include "srdeploy_sr.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#if NCNN_VULKAN
#include "gpu.h"
#endif

namespace srdeploy {

namespace {

// BT.601 as MATLAB (runtime/images.py): YCbCr = RGB/255 · M + offset, over 255.
const double kToYCbCr[3][3] = {{65.481, -37.797, 112.0}, {128.553, -74.203, -93.786}, {24.966, 112.0, -18.214}};
const double kOffset[3] = {16.0, 128.0, 128.0};

void invert(const double m[3][3], double out[3][3]) {
    const double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                       + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) {
            const int r1 = (c + 1) % 3, r2 = (c + 2) % 3, c1 = (r + 1) % 3, c2 = (r + 2) % 3;
            out[r][c] = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
}

// Float in [0, 1] → uint8 as runtime/images.py's to_uint8: ×255 in float32, clamped, rounded half to even.
unsigned char to_uint8(float x) {
    const float scaled = std::min(std::max(x * 255.0f, 0.0f), 255.0f);
    return static_cast<unsigned char>(std::nearbyint(scaled));
}

// Pillow's bicubic (a = -0.5), its coefficients per output pixel and the pass over one axis (mode F: float32
// pixels, double sums), as Pillow's Resample.c computes them.
double cubic(double x) {
    const double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

struct Coefficients {
    std::vector<int> start, count;
    std::vector<std::vector<double>> weights;
};

Coefficients coefficients(int in_size, int out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    const double filterscale = std::max(scale, 1.0), support = 2.0 * filterscale;
    Coefficients k;
    for (int xx = 0; xx < out_size; xx++) {
        const double center = (xx + 0.5) * scale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        std::vector<double> w(xmax);
        double total = 0.0;
        for (int x = 0; x < xmax; x++) total += w[x] = cubic((x + xmin - center + 0.5) / filterscale);
        for (double& v : w)
            if (total != 0.0) v /= total;
        k.start.push_back(xmin);
        k.count.push_back(xmax);
        k.weights.push_back(w);
    }
    return k;
}

// One float32 plane h×w → out_h×out_w: the horizontal pass first, then the vertical one, as Pillow does.
std::vector<float> bicubic(const std::vector<float>& plane, int w, int h, int out_w, int out_h) {
    const Coefficients kx = coefficients(w, out_w), ky = coefficients(h, out_h);
    std::vector<float> wide(static_cast<size_t>(h) * out_w), out(static_cast<size_t>(out_h) * out_w);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < out_w; x++) {
            double sum = 0.0;
            for (int i = 0; i < kx.count[x]; i++) sum += plane[static_cast<size_t>(y) * w + kx.start[x] + i] * kx.weights[x][i];
            wide[static_cast<size_t>(y) * out_w + x] = static_cast<float>(sum);
        }
    for (int y = 0; y < out_h; y++)
        for (int x = 0; x < out_w; x++) {
            double sum = 0.0;
            for (int i = 0; i < ky.count[y]; i++) sum += wide[static_cast<size_t>(ky.start[y] + i) * out_w + x] * ky.weights[y][i];
            out[static_cast<size_t>(y) * out_w + x] = static_cast<float>(sum);
        }
    return out;
}

// runtime/tiling.py's _spans: (core start, core end, window start, window end) along one axis.
std::vector<std::array<int, 4>> spans(int length, int tile, int overlap, int min_size) {
    std::vector<std::array<int, 4>> out;
    for (int start = 0; start < length; start += tile) {
        const int end = std::min(start + tile, length);
        int lo = std::max(start - overlap, 0), hi = std::min(end + overlap, length);
        while (hi - lo < std::min(min_size, length)) {
            lo = std::max(lo - 1, 0);
            hi = std::min(hi + 1, length);
        }
        out.push_back({start, end, lo, hi});
    }
    return out;
}

ncnn::Mat crop(const ncnn::Mat& in, int x0, int y0, int w, int h) {
    ncnn::Mat out(w, h, in.c);
    for (int c = 0; c < in.c; c++)
        for (int y = 0; y < h; y++)
            std::copy_n(in.channel(c).row(y0 + y) + x0, w, out.channel(c).row(y));
    return out;
}

}  // namespace

bool FolderFiles::text(const std::string& name, std::string* out) const {
    std::ifstream file(folder + "/" + name);
    if (!file) return false;
    std::stringstream buffer;
    buffer << file.rdbuf();
    *out = buffer.str();
    return true;
}

bool FolderFiles::load(ncnn::Net& net, const std::string& graph) const {
    return net.load_param((folder + "/" + graph + ".param").c_str()) == 0
           && net.load_model((folder + "/" + graph + ".bin").c_str()) == 0;
}

bool parse_facts(const std::string& text, Facts* facts, std::string* error) {
    std::istringstream lines(text);
    std::string key;
    while (lines >> key) {
        if (key == "scale") lines >> facts->scale;
        else if (key == "colour") lines >> facts->colour;
        else if (key == "radius") lines >> facts->radius;
        else if (key == "min_size") lines >> facts->min_size;
        else if (key == "max_size") lines >> facts->max_size;
        else if (key == "graph") {
            std::string name, input, output;
            lines >> name >> input >> output;
            facts->graphs.push_back(name);
            facts->blobs[name] = {input, output};
        } else {
            std::getline(lines, key);  // a fact this code does not use
        }
    }
    if (facts->graphs.empty() || facts->scale < 1 || (facts->colour != "rgb" && facts->colour != "y")) {
        *error = "srdeploy.txt names no graph, or an unknown scale or colour";
        return false;
    }
    return true;
}

bool Upscaler::load(const Files& files, bool vulkan, int threads, std::string* error) {
    std::string text;
    if (!files.text("srdeploy.txt", &text)) {
        *error = "the model's srdeploy.txt is missing";
        return false;
    }
    if (!parse_facts(text, &facts_, error)) return false;
#if NCNN_VULKAN
    vulkan_ = vulkan && ncnn::get_gpu_count() > 0;
#else
    vulkan_ = false;
    (void)vulkan;
#endif
    for (const std::string& graph : facts_.graphs) {
        ncnn::Net& net = nets_[graph];
        net.opt.use_vulkan_compute = vulkan_;
        if (threads > 0) net.opt.num_threads = threads;
        if (!files.load(net, graph)) {
            *error = "cannot load the ncnn graph " + graph;
            return false;
        }
    }
    return true;
}

bool Upscaler::load(const Files& files, GraphRunner runner, std::string* error) {
    std::string text;
    if (!files.text("srdeploy.txt", &text)) {
        *error = "the model's srdeploy.txt is missing";
        return false;
    }
    runner_ = std::move(runner);
    return parse_facts(text, &facts_, error);
}

namespace {

std::vector<float> flat(const ncnn::Mat& m) {
    std::vector<float> out(static_cast<size_t>(m.c) * m.h * m.w);
    for (int c = 0; c < m.c; c++) std::copy_n(static_cast<const float*>(m.channel(c)), m.h * m.w, out.data() + static_cast<size_t>(c) * m.h * m.w);
    return out;
}

ncnn::Mat shaped(const std::vector<float>& values, int h, int w) {
    const int c = static_cast<int>(values.size() / (static_cast<size_t>(h) * w));
    ncnn::Mat m(w, h, c);
    for (int k = 0; k < c; k++) std::copy_n(values.data() + static_cast<size_t>(k) * h * w, h * w, static_cast<float*>(m.channel(k)));
    return m;
}

}  // namespace

std::vector<float> Upscaler::run_flat(const std::string& graph, const std::vector<float>& input, int, int h, int w) {
    return flat(run(graph, shaped(input, h, w)));  // the channels follow from the size
}

ncnn::Mat Upscaler::run(const std::string& graph, const ncnn::Mat& in) {
    if (runner_) {
        const std::vector<float> out = runner_(graph, flat(in), in.c, in.h, in.w);
        if (graph == "gate_margin") return shaped(out, 1, 1);
        const int s = graph == "gate_features" ? 1 : facts_.scale;
        return shaped(out, in.h * s, in.w * s);
    }
    ncnn::Extractor extractor = nets_.at(graph).create_extractor();
    extractor.input(facts_.blobs.at(graph).first.c_str(), in);
    ncnn::Mat out;
    extractor.extract(facts_.blobs.at(graph).second.c_str(), out);
    return out;
}

// runtime/tiling.py's tiled_infer with one graph: each tile's window through it, its core kept.
ncnn::Mat Upscaler::tiled(const ncnn::Mat& in, int tile, const std::string& graph) {
    const int s = facts_.scale;
    if (tile <= 0 || (in.h <= tile && in.w <= tile)) return run(graph, in);
    ncnn::Mat out(in.w * s, in.h * s, in.c);
    for (const auto& ys : spans(in.h, tile, facts_.radius, facts_.min_size))
        for (const auto& xs : spans(in.w, tile, facts_.radius, facts_.min_size)) {
            const ncnn::Mat patch = run(graph, crop(in, xs[2], ys[2], xs[3] - xs[2], ys[3] - ys[2]));
            for (int c = 0; c < in.c; c++)
                for (int y = ys[0] * s; y < ys[1] * s; y++)
                    std::copy_n(patch.channel(c).row(y - ys[2] * s) + (xs[0] - xs[2]) * s, (xs[1] - xs[0]) * s,
                                out.channel(c).row(y) + xs[0] * s);
        }
    return out;
}

// runtime/global_gate.py: the gate's features summed over the tile cores in double (the whole image's mean),
// then logit 1 - logit 0 > 0 picks branch 1.
bool Upscaler::decide(const ncnn::Mat& in, int tile) {
    const bool whole = tile <= 0 || (in.h <= tile && in.w <= tile);
    const auto rows = whole ? std::vector<std::array<int, 4>>{{0, in.h, 0, in.h}} : spans(in.h, tile, facts_.radius, facts_.min_size);
    const auto cols = whole ? std::vector<std::array<int, 4>>{{0, in.w, 0, in.w}} : spans(in.w, tile, facts_.radius, facts_.min_size);
    std::vector<double> total;
    for (const auto& ys : rows)
        for (const auto& xs : cols) {
            const ncnn::Mat features = run("gate_features", crop(in, xs[2], ys[2], xs[3] - xs[2], ys[3] - ys[2]));
            total.resize(features.c, 0.0);
            for (int c = 0; c < features.c; c++)
                for (int y = ys[0] - ys[2]; y < ys[1] - ys[2]; y++)
                    for (int x = xs[0] - xs[2]; x < xs[1] - xs[2]; x++) total[c] += features.channel(c).row(y)[x];
        }
    ncnn::Mat mean(1, 1, static_cast<int>(total.size()));
    for (size_t c = 0; c < total.size(); c++) mean.channel(c)[0] = static_cast<float>(total[c] / (static_cast<double>(in.w) * in.h));
    const ncnn::Mat margin = run("gate_margin", mean);
    return margin[0] > 0.0f;
}

std::vector<unsigned char> Upscaler::upscale(const unsigned char* rgb, int w, int h, int tile, std::vector<float>* raw) {
    const bool luma = facts_.colour == "y";
    const int largest = facts_.max_size - 2 * facts_.radius;  // the largest tile core whose window the graphs take
    if (facts_.max_size > 0 && (tile <= 0 || tile > largest)) tile = std::max(largest, facts_.min_size);
    ncnn::Mat in(w, h, luma ? 1 : 3);
    std::vector<float> cb, cr;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const unsigned char* p = rgb + (static_cast<size_t>(y) * w + x) * 3;
            if (!luma) {
                for (int c = 0; c < 3; c++) in.channel(c).row(y)[x] = p[c] / 255.0f;
                continue;
            }
            double ycc[3];
            for (int k = 0; k < 3; k++)
                ycc[k] = ((p[0] / 255.0) * kToYCbCr[0][k] + (p[1] / 255.0) * kToYCbCr[1][k] + (p[2] / 255.0) * kToYCbCr[2][k]
                          + kOffset[k]) / 255.0;
            in.channel(0).row(y)[x] = static_cast<float>(ycc[0]);
            cb.push_back(static_cast<float>(ycc[1]));
            cr.push_back(static_cast<float>(ycc[2]));
        }
    ncnn::Mat out;
    if (facts_.blobs.count("model")) {
        out = tiled(in, tile, "model");
    } else {
        out = tiled(in, tile, decide(in, tile) ? "branch1" : "branch0");
    }
    const int ow = out.w, oh = out.h;
    if (raw) {
        raw->resize(static_cast<size_t>(out.c) * ow * oh);
        for (int c = 0; c < out.c; c++)
            for (int y = 0; y < oh; y++) std::copy_n(out.channel(c).row(y), ow, raw->data() + (static_cast<size_t>(c) * oh + y) * ow);
    }
    std::vector<unsigned char> result(static_cast<size_t>(ow) * oh * 3);
    if (!luma) {
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                for (int c = 0; c < 3; c++) result[(static_cast<size_t>(y) * ow + x) * 3 + c] = to_uint8(out.channel(c).row(y)[x]);
        return result;
    }
    double back[3][3];
    invert(kToYCbCr, back);
    const std::vector<float> cb_up = bicubic(cb, w, h, ow, oh), cr_up = bicubic(cr, w, h, ow, oh);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            const size_t i = static_cast<size_t>(y) * ow + x;
            const double ycc[3] = {out.channel(0).row(y)[x] * 255.0 - kOffset[0], cb_up[i] * 255.0 - kOffset[1],
                                   cr_up[i] * 255.0 - kOffset[2]};
            for (int c = 0; c < 3; c++)
                result[i * 3 + c] = to_uint8(static_cast<float>(ycc[0] * back[0][c] + ycc[1] * back[1][c] + ycc[2] * back[2][c]));
        }
    return result;
}

}  // namespace srdeploy
