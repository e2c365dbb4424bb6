// srdeploy's upscaler on ncnn: the same file on Android (JNI, models from the APK's assets) and on a desktop
// (models from a folder); its graphs may also run elsewhere (``GraphRunner``: the app's ExecuTorch CPU path). It
// reproduces srdeploy's Python pipeline: tiles with the network's receptive radius as context (so tiles equal the
// whole image), DSRNet's gate decided once on the whole image, luma networks (FSRCNN) run on BT.601 Y with the
// chroma upscaled bicubically as Pillow does.
#pragma once

#include <array>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "net.h"

namespace srdeploy {

// What the exported model is (the bundle's model/srdeploy.txt, written by srdeploy from its manifest).
struct Facts {
    int scale = 2;
    std::string colour = "rgb";  // rgb, or y (the network sees BT.601 luma)
    int radius = 0;              // receptive radius in LR pixels: the context each tile gets
    int min_size = 1;            // smallest LR height/width the graphs accept
    int max_size = 0;            // largest LR height/width they accept (0: any); tiles are cut to fit it
    std::vector<std::string> graphs;                                   // model, or the four gate parts
    std::map<std::string, std::pair<std::string, std::string>> blobs;  // graph -> (input, output) blob
};

// Loads a file the bundle holds (a folder on a desktop, the APK's assets on Android): its text, or a graph.
struct Files {
    virtual ~Files() = default;
    virtual bool text(const std::string& name, std::string* out) const = 0;
    virtual bool load(ncnn::Net& net, const std::string& graph) const = 0;  // graph.param and graph.bin
};

// A desktop folder holding the model files.
struct FolderFiles : Files {
    explicit FolderFiles(std::string folder) : folder(std::move(folder)) {}
    bool text(const std::string& name, std::string* out) const override;
    bool load(ncnn::Net& net, const std::string& graph) const override;
    std::string folder;
};

bool parse_facts(const std::string& text, Facts* facts, std::string* error);

// Runs one graph outside ncnn on flat floats (C×H×W, channel after channel) and returns the output's floats; the
// Upscaler gives them their shape (the graph's name says it: the input's size, ×scale, or 1×1 for gate_margin).
using GraphRunner = std::function<std::vector<float>(const std::string& graph, const std::vector<float>& input, int c,
                                                     int h, int w)>;

class Upscaler {
public:
    // Reads the facts and loads every graph; Vulkan where ncnn sees a device and ``vulkan`` asks for it.
    bool load(const Files& files, bool vulkan, int threads, std::string* error);

    // Reads the facts only: every graph runs through ``runner`` (the tiles, the gate and the colour stay this file's).
    bool load(const Files& files, GraphRunner runner, std::string* error);

    // One of this upscaler's graphs on flat floats, as a GraphRunner runs it (for checking that path on a desktop).
    std::vector<float> run_flat(const std::string& graph, const std::vector<float>& input, int c, int h, int w);

    // RGB uint8 (h×w×3, rows packed) → RGB uint8 (scale·h × scale·w × 3). ``tile``: LR pixels of each tile's core
    // (0: the whole image at once). ``raw``, when given, receives the network's output, float C×sH×sW.
    std::vector<unsigned char> upscale(const unsigned char* rgb, int w, int h, int tile,
                                       std::vector<float>* raw = nullptr);

    const Facts& facts() const { return facts_; }
    bool on_vulkan() const { return vulkan_; }

private:
    using Window = std::array<int, 4>;  // core start, core end, window start, window end (one axis)
    ncnn::Mat run(const std::string& graph, const ncnn::Mat& in);
    ncnn::Mat tiled(const ncnn::Mat& in, int tile, const std::string& graph);
    bool decide(const ncnn::Mat& in, int tile);

    Facts facts_;
    std::map<std::string, ncnn::Net> nets_;
    GraphRunner runner_;
    bool vulkan_ = false;
};

}  // namespace srdeploy
