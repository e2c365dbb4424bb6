// srdeploy's upscaler on ncnn: the same file on Android (JNI, models from the APK's assets) and on a desktop
// (models from a folder). It reproduces srdeploy's Python pipeline: tiles with the network's receptive radius as
// context (so tiles equal the whole image), DSRNet's gate decided once on the whole image, luma networks
// (FSRCNN) run on BT.601 Y with the chroma upscaled bicubically as Pillow does.
#pragma once

#include <array>
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

class Upscaler {
public:
    // Reads the facts and loads every graph; Vulkan where ncnn sees a device and ``vulkan`` asks for it.
    bool load(const Files& files, bool vulkan, int threads, std::string* error);

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
    bool vulkan_ = false;
};

}  // namespace srdeploy
